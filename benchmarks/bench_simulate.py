"""Simulator speed: sites/s of 6 x 128 x 128 sites (the demo preset) on this machine.

    .venv/bin/python benchmarks/bench_simulate.py [--workers N]

Two numbers: rendering alone (pool of one process per core, PNG writing excluded) and
`morphoscale simulate --preset demo` end to end (planning, rendering, PNG files, metadata).
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import argparse
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from _report import cpu_name, write_section
from morphoscale.simulate.biology import P
from morphoscale.simulate.render import Optics, Renderer

_R = {}


def _init():
    _R["r"] = Renderer(128)


def _render(k: int) -> int:
    rng = np.random.default_rng([7, k])
    optics = Optics(gain=np.ones(6), offset=np.full(6, 0.03), vignetting=0.2, focus_blur=abs(rng.normal(0, 0.5)))
    _R["r"].render(rng.normal(0, 1, P), optics, rng)
    return k


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--sites", type=int, default=1000)
    args = ap.parse_args()
    with mp.get_context("fork").Pool(args.workers, initializer=_init) as pool:
        pool.map(_render, range(args.workers * 4))
        t0 = time.perf_counter()
        pool.map(_render, range(args.sites), chunksize=8)
        render_rate = args.sites / (time.perf_counter() - t0)
    from morphoscale.simulate.screen import simulate

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = simulate(Path(tmp) / "demo", "demo", seed=0, workers=args.workers, progress=False)
        total = time.perf_counter() - t0
        n_sites = sum(1 for _ in open(out / "metadata.csv")) - 1
    lines = [
        f"Command: `.venv/bin/python benchmarks/bench_simulate.py --workers {args.workers} --sites {args.sites}`.",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| what | sites | sites/s |",
        "|---|---:|---:|",
        f"| rendering 6 x 128 x 128 sites, {args.workers} processes | {args.sites} | {render_rate:.0f} |",
        f"| `morphoscale simulate --preset demo` end to end (PNG files included) | {n_sites} | {n_sites / total:.0f} |",
    ]
    write_section("simulate", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
