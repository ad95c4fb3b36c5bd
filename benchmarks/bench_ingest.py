"""Ingest throughput against the plain decode rate of the same files.

Plain decode: tifffile/Pillow decode every file of every site, one process per core,
nothing else. Ingest: `morphoscale ingest` end to end (validation, header checks,
decode, scaling, zarr write, finalize), same number of processes.

    .venv/bin/python benchmarks/bench_ingest.py [--sites 48] [--workers N]

Writes the table into BENCHMARKS.md between the ingest markers.
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import argparse
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from _report import cpu_name, write_section
from morphoscale.data import examples
from morphoscale.data.examples import JUMP_FIELD_FILES
from morphoscale.data.images import read_image, scale_to_uint8
from morphoscale.data.ingest import ingest, load_ingest_config


def make_jump_screen(root: Path, n_sites: int) -> Path:
    """n_sites copies of the real JUMP field (LZW-compressed 1080x1080 uint16 TIFFs), each its own files."""
    field = examples.get("jump-pilot-field")
    root.mkdir(parents=True)
    header = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"] + [
        f"{p}Orig{ch}" for ch in JUMP_FIELD_FILES for p in ("FileName_", "PathName_")
    ]
    lines = [",".join(header)]
    pm = ["well_position,broad_sample"]
    for i in range(n_sites):
        well = f"{'ABCDEFGH'[i // 12 % 8]}{i % 12 + 1:02d}"
        site = i // 96 + 1
        row = ["P1", well, str(site)]
        for ch, f in JUMP_FIELD_FILES.items():
            name = f"s{i}_{f}"
            shutil.copyfile(field / f, root / name)
            row += [name, "."]
        lines.append(",".join(row))
        if site == 1:
            pm.append(f"{well},{'DMSO' if i % 8 == 0 else f'cpd{i}'}")
    (root / "load_data.csv").write_text("\n".join(lines) + "\n")
    (root / "platemap.csv").write_text("\n".join(pm) + "\n")
    return root / "load_data.csv"


def make_rxrx_screen(root: Path, n_sites: int) -> Path:
    """RxRx layout, 6 x 512x512 uint8 PNG per site, cut from the real field (so PNG compression is realistic)."""
    field = examples.get("jump-pilot-field")
    planes = [scale_to_uint8(tifffile.imread(field / f), (0.1, 99.9))[0] for f in JUMP_FIELD_FILES.values()]
    planes.append(planes[0][::-1].copy())
    rows = ["site_id,well_id,cell_type,dataset,experiment,plate,well,site,well_type,sirna"]
    folder = root / "images" / "EXP-1" / "Plate1"
    folder.mkdir(parents=True)
    for i in range(n_sites):
        well, site = f"{'BCDEFGHIJKLMNO'[i // 20 % 14]}{i % 20 + 2:02d}", 1 + i // 280
        y, x = (i * 97) % 560, (i * 53) % 560
        for c, p in enumerate(planes, start=1):
            Image.fromarray(p[y : y + 512, x : x + 512]).save(folder / f"{well}_s{site}_w{c}.png")
        ctl = i % 10 == 0
        rows.append(
            f"EXP-1_1_{well}_{site},EXP-1_1_{well},HUVEC,train,EXP-1,1,{well},{site},"
            f"{'negative_control' if ctl else 'treatment'},{'EMPTY' if ctl else f's{i}'}"
        )
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def steady_allocator() -> None:
    """Fix glibc's malloc thresholds for this process and every worker forked from it.

    Plain decode allocates a fresh ~2.5 MB buffer and array per plane. By default glibc's
    mmap and trim thresholds move with what a process has freed before, so whether those
    buffers are reused or mapped, faulted in and unmapped again depended on the history of
    the process that forked the workers: the same decode ran at 25 or at 32 JUMP sites/s.
    Fixed here at the fast setting (buffers reused) for both sides, so the baseline is the
    fastest plain decode, not a lucky or unlucky one. Ingest allocates little per site."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)  # the largest glibc accepts
    libc.mallopt(m_trim_threshold, 256 << 20)


def _decode_site(paths: list[str]) -> int:
    return sum(read_image(p).nbytes for p in paths)


def plain_decode(sites: list[list[str]], workers: int) -> tuple[float, int]:
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_decode_site, sites[:workers])  # warm the workers, as ingest's pool is part of its time
        os.sync()  # no writeback of an earlier run's files during the clock
        t0 = time.perf_counter()
        nbytes = sum(pool.imap_unordered(_decode_site, sites, chunksize=1))
        return time.perf_counter() - t0, nbytes


def run_ingest(overrides: dict, out: Path, workers: int) -> float:
    cfg = load_ingest_config(None, {**overrides, "workers": workers})
    shutil.rmtree(out, ignore_errors=True)  # removing the last run's store is not part of an ingest
    os.sync()
    t0 = time.perf_counter()
    ingest(cfg, out, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=48)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    steady_allocator()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        load_data = make_jump_screen(tmp / "jump", args.sites)
        rxrx = make_rxrx_screen(tmp / "rxrx", args.sites * 4)
        jump_sites = [[str(tmp / "jump" / f"s{i}_{f}") for f in JUMP_FIELD_FILES.values()] for i in range(args.sites)]
        rx_files = sorted((rxrx / "images" / "EXP-1" / "Plate1").glob("*.png"))
        rx_sites = [[str(p) for p in rx_files[k : k + 6]] for k in range(0, len(rx_files), 6)]
        cases = [
            (
                "JUMP TIFF uint16 (LZW) -> uint8 (percentile scaled)",
                jump_sites,
                {"format": "jump", "source": str(load_data)},
            ),
            (
                "JUMP TIFF uint16 (LZW) -> uint16 (bit-exact)",
                jump_sites,
                {"format": "jump", "source": str(load_data), "dtype": "uint16"},
            ),
            ("RxRx PNG uint8 512x512 x6 -> uint8", rx_sites, {"format": "rxrx", "source": str(rxrx)}),
        ]
        for name, sites, overrides in cases:
            _, nbytes = plain_decode(sites[:1], 1)
            nbytes *= len(sites)
            # This machine's speed drifts by 10-30% within minutes, so the two are measured in
            # adjacent pairs (alternating which goes first), and the ratio is the median of
            # the pairs' ratios; the rates are the best of the repeats.
            dec, ing, ratios = [], [], []
            for r in range(args.repeats):
                if r % 2:
                    ing.append(run_ingest(overrides, tmp / "store.zarr", args.workers))
                    dec.append(plain_decode(sites, args.workers)[0])
                else:
                    dec.append(plain_decode(sites, args.workers)[0])
                    ing.append(run_ingest(overrides, tmp / "store.zarr", args.workers))
                ratios.append(dec[-1] / ing[-1])
            n, d, i = len(sites), min(dec), min(ing)
            rows.append(
                (
                    name,
                    n,
                    n / d,
                    nbytes / d / 1e6,
                    n / i,
                    nbytes / i / 1e6,
                    float(np.median(ratios)),
                    min(ratios),
                    max(ratios),
                )
            )
            print(
                f"{name}: decode {n / d:.1f} sites/s, ingest {n / i:.1f} sites/s, paired ratios {' '.join(f'{x:.0%}' for x in ratios)}",
                flush=True,
            )
    cpu = cpu_name()
    table = [
        f"Command: `.venv/bin/python benchmarks/bench_ingest.py --sites {args.sites} --workers {args.workers} --repeats {args.repeats}`.",
        f"Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; files in the page cache; glibc "
        "malloc thresholds fixed for both sides (`steady_allocator`).",
        f"Rates: best of {args.repeats}. Ratio: median (and range) of {args.repeats} adjacent pairs of runs.",
        "",
        "| source | sites | plain decode sites/s | plain decode MB/s | ingest sites/s | ingest MB/s | ingest / decode, median (range) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n, ds, dm, is_, im, ratio, lo, hi in rows:
        table.append(f"| {name} | {n} | {ds:.1f} | {dm:.0f} | {is_:.1f} | {im:.0f} | {ratio:.0%} ({lo:.0%}-{hi:.0%}) |")
    write_section("ingest", "\n".join(table))
    print("\n".join(table))


if __name__ == "__main__":
    main()
