"""Training loader throughput: 256 px crops of 6-channel uint8 sites, per DataLoader worker,
beside the raw chunk-decode rate measured in the same run.

    .venv/bin/python benchmarks/bench_loader.py [--sites 64 --items 1024]

A store of 512 x 512 x 6 uint8 sites is ingested from PNGs that look like 8-bit Cell
Painting channels to the codec (bright smooth blobs on a dark background with shot noise;
blosc compresses them about as it does real fields, unlike uniform noise). Each training item reads
one whole site (one chunk) and cuts one crop, so the loader's ceiling per worker is the
decode rate in sites/s. Measured: decode alone (ImageStore.read over every site), then the
training DataLoader (batches of 32, the train command's StoreDataModule) with 0, 1 and 2
workers, transforms on the CPU (standardize + augment per crop, float32 out) and on the
device (uint8 crops out; the GPU standardizes and augments the batch). Rates are steady
state: the clock starts after the first batch (worker start-up excluded, as persistent
workers pay it once per run).
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _report import cpu_name, write_section


def make_store(root: Path, n_sites: int, size: int = 512) -> Path:
    import sys

    from PIL import Image
    from scipy.ndimage import gaussian_filter

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from fixtures import rxrx_rows, write_metadata

    from morphoscale.data.ingest import ingest, load_ingest_config

    rng = np.random.default_rng(0)
    wells = tuple(f"{'BCDEFGHIJKLMNO'[k // 20]}{k % 20 + 2:02d}" for k in range((n_sites + 1) // 2))
    rows = rxrx_rows(experiments=("E1",), wells=wells, sites=(1, 2))[:n_sites]
    src = root / "src"
    for r in rows:
        folder = src / "images" / r["experiment"] / f"Plate{r['plate']}"
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(1, 7):
            # cells: smooth bright blobs on a dark background with shot noise, as an 8-bit
            # Cell Painting channel looks (mostly background; blosc compresses it)
            cells = gaussian_filter((rng.random((size, size)) > 0.9995).astype(float), 10) * 4e4
            field = rng.poisson(6 + np.clip(cells, 0, 240))
            Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).save(folder / f"{r['well']}_s{r['site']}_w{c}.png")
    write_metadata(src / "metadata.csv", rows)
    return ingest(load_ingest_config(None, {"format": "rxrx", "source": str(src)}), root / "s.zarr", progress=False)


def decode_rate(store_path: Path, repeats: int = 2, reads: int = 64) -> float:
    """Sites/s of reading and decoding whole chunks (one process), cycling over the sites."""
    from morphoscale.data.store import ImageStore

    store = ImageStore(store_path)
    n = max(reads, len(store))
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            store.read(i % len(store))
        best = max(best, n / (time.perf_counter() - t0))
    return best


def jump_store(root: Path) -> Path:
    """The real JUMP pilot field (5 channels, 1080 x 1080, from deepprofiler's sdist), ingested."""
    from morphoscale.data import examples
    from morphoscale.data.ingest import ingest, load_ingest_config

    return ingest(
        load_ingest_config(examples.get("jump-pilot-field") / "ingest.yaml", {}), root / "jump.zarr", progress=False
    )


def loader_rate(store_path: Path, workers: int, device_transforms: bool, items: int, batch: int = 32) -> float:
    from morphoscale.train.data import StoreDataModule

    dm = StoreDataModule(
        str(store_path),
        256,
        batch,
        items // batch,
        augment="random",
        num_workers=workers,
        seed=0,
        device_transforms=device_transforms,
    )
    dm.setup()
    it = iter(dm.train_dataloader())
    next(it)
    t0 = time.perf_counter()
    n = sum(len(b["image"]) for b in it)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=64)
    ap.add_argument("--items", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker's own setting; the main process likewise
    lines = [
        f"Command: `.venv/bin/python benchmarks/bench_loader.py --sites {args.sites} --items {args.items}`.",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}; one thread per process. Raw chunk decode: one process, "
        "best of the runs before and after, the ceiling of one worker (one site read per crop).",
        "",
        "| store | decode sites/s | transforms | workers | crops/s (256 px) | per worker | per worker / decode |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for store in (make_store(Path(tmp), args.sites), jump_store(Path(tmp))):
            from morphoscale.data.store import ImageStore

            st = ImageStore(store)
            stored = sum(f.stat().st_size for f in (store / "images").rglob("*") if f.is_file())
            raw_bytes = int(np.prod(st.shape)) * st.dtype.itemsize
            kind = "real JUMP field" if len(st) == 1 else "synthetic"
            name = f"{len(st)} x {st.shape[2]} x {st.shape[3]} x {st.shape[1]} {st.dtype} ({kind}; lz4 {raw_bytes / stored:.1f}x)"
            decode = decode_rate(store)
            rows = [(dt, w, loader_rate(store, w, dt, args.items)) for dt in (False, True) for w in (0, 1, 2)]
            decode = max(decode, decode_rate(store))
            for device_transforms, workers, rate in rows:
                per = rate / max(workers, 1)
                where = "on the device (raw out)" if device_transforms else "on the CPU (float32 out)"
                lines.append(
                    f"| {name} | {decode:.0f} | {where} | {workers} | {rate:.0f} | {per:.0f} | {per / decode:.0%} |"
                )
    write_section("loader", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
