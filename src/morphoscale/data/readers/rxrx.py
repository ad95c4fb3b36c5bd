"""RxRx layout (RxRx1/RxRx3): images/{experiment}/Plate{plate}/{well}_s{site}_w{channel}.png + metadata.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import InputError, Problems
from ..sitetable import SiteColumns, build_site_table
from .base import SourceTable, read_table

# Channel order of RxRx1/RxRx3 (w1..w6).
RXRX_CHANNELS = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]

RXRX_COLUMNS = SiteColumns(
    plate="plate",
    well="well",
    site="site",
    batch="experiment",
    perturbation="sirna",
    perturbation_type="perturbation_type",
    default_perturbation_type="gene",
    control_column="well_type",
    control_values=["negative_control"],
)


def read_rxrx(source: Path, channels: list[str] | None = None, columns: SiteColumns | None = None, require_controls: bool = True, problems: Problems | None = None) -> SourceTable:
    source = Path(source)
    meta_path = source / "metadata.csv"
    if not source.is_dir():
        raise InputError(f"{source}: not a folder (expected an RxRx dataset with metadata.csv and images/)")
    raw = read_table(meta_path)
    channels = list(channels or RXRX_CHANNELS)
    columns = columns or RXRX_COLUMNS
    problems = problems if problems is not None else Problems()
    for col in ("experiment", "plate", "well", "site"):
        if col not in raw.columns:
            problems.add(meta_path, f"missing column '{col}' (needed to locate the images)")
    if len(problems):
        problems.raise_if_any()
    # Plate numbers repeat across experiments: the site table's plate is experiment_plate.
    folder = source / "images" / raw["experiment"] / ("Plate" + raw["plate"].str.strip())
    paths = {
        ch: pd.Series([str(d / f"{w}_s{s}_w{k}.png") for d, w, s in zip(folder, raw["well"].str.strip(), raw["site"].str.strip())], index=raw.index)
        for k, ch in enumerate(channels, start=1)
    }
    raw = raw.copy()
    raw["plate_number"] = raw["plate"]
    raw["plate"] = raw["experiment"].str.strip() + "_" + raw["plate"].str.strip()
    sites = build_site_table(raw, columns, str(meta_path), problems, paths, require_controls)
    for extra in ("experiment", "plate_number", "well_type"):
        if extra in raw.columns and extra not in sites.columns:
            sites[extra] = raw[extra].to_numpy()
    return SourceTable(sites, channels, str(source))
