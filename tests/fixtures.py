"""Writers of tiny screens in each source layout, with known pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

RXRX_CHANNELS = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]


def rxrx_rows(experiments=("EXP-1", "EXP-2"), plates=(1,), wells=("B02", "B03", "C02", "C03"), sites=(1, 2)):
    rows = []
    for e in experiments:
        for p in plates:
            for k, w in enumerate(wells):
                control = k == 0
                for s in sites:
                    rows.append(
                        dict(
                            site_id=f"{e}_{p}_{w}_{s}",
                            well_id=f"{e}_{p}_{w}",
                            cell_type="HUVEC",
                            dataset="train",
                            experiment=e,
                            plate=str(p),
                            well=w,
                            site=str(s),
                            well_type="negative_control" if control else "treatment",
                            sirna="EMPTY" if control else f"s{1000 + k}",
                        )
                    )
    return rows


def write_rxrx_screen(root: Path, size: int = 64, rows=None, seed: int = 0, n_channels: int = 6) -> Path:
    """An RxRx-layout dataset of random uint8 PNGs; returns its folder."""
    rng = np.random.default_rng(seed)
    rows = rows if rows is not None else rxrx_rows()
    root.mkdir(parents=True, exist_ok=True)
    for r in rows:
        folder = root / "images" / r["experiment"] / f"Plate{r['plate']}"
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(1, n_channels + 1):
            img = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(img).save(folder / f"{r['well']}_s{r['site']}_w{c}.png")
    write_metadata(root / "metadata.csv", rows)
    return root


def write_metadata(path: Path, rows) -> None:
    cols = list(rows[0])
    lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def rxrx_path(root: Path, row: dict, channel: int) -> Path:
    return root / "images" / row["experiment"] / f"Plate{row['plate']}" / f"{row['well']}_s{row['site']}_w{channel}.png"


def write_csv_screen(root: Path, size: int = 48, n_sites: int = 6, seed: int = 1) -> Path:
    """A generic-CSV screen of random uint16 TIFFs (3 channels); returns the CSV path."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["plate,well,site,batch,perturbation,dna,actin,mito"]
    for i in range(n_sites):
        well = ["A01", "A02", "A03"][i % 3]
        pert = "DMSO" if well == "A01" else f"cpd{i % 3}"
        names = []
        for ch in ("dna", "actin", "mito"):
            img = rng.integers(0, 4096, (size, size), dtype=np.uint16)
            name = f"site{i}_{ch}.tif"
            tifffile.imwrite(root / name, img)
            names.append(name)
        lines.append(f"P1,{well},{i // 3 + 1},B1,{pert}," + ",".join(names))
    (root / "sites.csv").write_text("\n".join(lines) + "\n")
    (root / "ingest.yaml").write_text(
        "format: csv\nsource: sites.csv\nchannel_columns: {DNA: dna, Actin: actin, Mito: mito}\n"
        "columns: {control_values: [DMSO], default_perturbation_type: compound}\n"
    )
    return root / "sites.csv"
