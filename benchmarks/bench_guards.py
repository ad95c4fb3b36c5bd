"""What the reliability guards cost on a large screen, per site and extrapolated to a million.

    .venv/bin/python benchmarks/bench_guards.py [--sites 1000000] [--chunks 100000]

Two guards run over every site before any work:

* ingest's input guard: the folder of every image path (five channels a site), each folder
  resolved once, so that the store is never written over an image (`data/ingest._image_folders`
  and `io.refuse_overlap`), on a site table of `--sites` rows;
* the chunk scan of `train` and of `embed`/`features --missing blank|skip`: every site's
  chunk file opened, its size and 16-byte Blosc header read (`ImageStore.damaged_sites`), on a
  store of `--chunks` sites (real chunk files; the page cache warm, as right after ingest).
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _report import cpu_name, write_section
from morphoscale.data.ingest import _image_folders
from morphoscale.data.store import SiteChunks, blosc_codec
from morphoscale.io import refuse_overlap

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


class _Table:
    """The one thing the guard reads of a source table: its sites with their path columns."""

    def __init__(self, n: int, plates: int = 400):
        site = np.arange(n)
        plate = site % plates
        self.sites = pd.DataFrame(
            {
                f"path_{c}": [
                    f"/data/screen/plate{p:04d}/Images/r{s % 16:02d}c{s % 24:02d}f01-ch{k}.tiff"
                    for s, p in zip(site, plate)
                ]
                for k, c in enumerate(CHANNELS, 1)
            }
        )


def time_input_guard(n: int) -> float:
    table = _Table(n)
    t0 = time.perf_counter()
    folders = _image_folders(table)
    refuse_overlap(Path("/tmp/out.zarr"), *folders)
    return time.perf_counter() - t0


def time_chunk_scan(n: int) -> float:
    import zarr

    root = Path(tempfile.mkdtemp(prefix="guards-"))
    try:
        group = zarr.open_group(root / "s.zarr", mode="w")
        arr = group.create_array(
            "images",
            shape=(n, len(CHANNELS), 64, 64),
            chunks=(1, len(CHANNELS), 64, 64),
            dtype="uint8",
            compressors=blosc_codec(),
            chunk_key_encoding={"name": "default", "separator": "."},
        )
        arr[0] = np.random.default_rng(0).integers(0, 255, (len(CHANNELS), 64, 64), dtype=np.uint8)
        chunks = SiteChunks(root / "s.zarr" / "images")
        frame = chunks.chunk_file(0).read_bytes()
        for i in range(1, n):
            chunks.chunk_file(i).write_bytes(frame)
        t0 = time.perf_counter()
        damaged = [i for i in range(n) if chunks.damage(i)]
        dt = time.perf_counter() - t0
        assert not damaged
        return dt
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=1_000_000)
    ap.add_argument("--chunks", type=int, default=100_000)
    args = ap.parse_args()
    guard = time_input_guard(args.sites)
    scan = time_chunk_scan(args.chunks)
    rows = [
        ("ingest's input guard (5 image paths a site)", args.sites, guard),
        ("chunk scan (open, size, 16-byte header per site)", args.chunks, scan),
    ]
    body = "\n".join(
        [
            f"Command: `.venv/bin/python benchmarks/bench_guards.py --sites {args.sites} --chunks {args.chunks}`.",
            f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; the page cache warm.",
            "",
            "| guard | sites | seconds | per site | a million sites |",
            "|---|---:|---:|---:|---:|",
            *[f"| {w} | {n:,} | {s:.2f} | {s / n * 1e6:.1f} us | {s / n * 1e6:.0f} s |" for w, n, s in rows],
        ]
    )
    print(body)
    write_section("guards", body)


if __name__ == "__main__":
    main()
