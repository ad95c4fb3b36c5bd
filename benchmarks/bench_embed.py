"""Embedding throughput: mae_vit_small_patch16_256 inference on CPU, FLOP utilization, and the
loader alone against end to end.

    .venv/bin/python benchmarks/bench_embed.py [--sites 24]

A store of 512 x 512 6-channel sites (4 tiles of 256 each) is made from random pixels; a
random-init checkpoint of the preset is written by a 1-step `train`. Model-only rate:
batches of 16 tiles through `embed` under inference_mode; FLOPs by torch.utils.flop_counter;
MFU against a 4096^3 fp32 matmul in the same run. Loader alone: iterating the DataLoader
over the store. End to end: `morphoscale embed` on the store (site level).
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

import torch
from bench_train import matmul_peak
from torch.utils.flop_counter import FlopCounterMode

from _report import cpu_name, write_section


def make_store(root: Path, n_sites: int) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from fixtures import rxrx_rows, write_rxrx_screen

    from morphoscale.data.ingest import ingest, load_ingest_config

    wells = tuple(f"{'BCDEFGHIJKLMNO'[k // 20]}{k % 20 + 2:02d}" for k in range((n_sites + 1) // 2))
    rows = rxrx_rows(experiments=("E1",), wells=wells, sites=(1, 2))[:n_sites]
    src = write_rxrx_screen(root / "src", size=512, rows=rows)
    return ingest(load_ingest_config(None, {"format": "rxrx", "source": str(src)}), root / "s.zarr", progress=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=24)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    from torch.utils.data import DataLoader

    from morphoscale.data.datasets import TileDataset
    from morphoscale.embed import embed
    from morphoscale.train.checkpoint import load_module
    from morphoscale.train.fit import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = make_store(tmp, args.sites)
        ckpt = train(
            TrainConfig(model="mae_vit_small_patch16_256", batch_size=1, max_steps=1, warmup_steps=0),
            store,
            tmp / "run",
            progress=False,
        )
        model = load_module(ckpt).model.eval()
        x = torch.randn(args.batch, 6, 256, 256)
        peak = matmul_peak()
        with torch.inference_mode():
            with FlopCounterMode(display=False) as fc:
                model.embed(x)
            flops = fc.get_total_flops()
            model.embed(x)
            t0 = time.perf_counter()
            reps = 3
            for _ in range(reps):
                model.embed(x)
            model_rate = args.batch * reps / (time.perf_counter() - t0)
        peak = max(peak, matmul_peak())
        tiles = TileDataset(store, 256)
        loader_rates = {}
        for workers in (0, 2):
            t0 = time.perf_counter()
            n = sum(len(b["image"]) for b in DataLoader(tiles, batch_size=args.batch, num_workers=workers))
            loader_rates[workers] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        embed(ckpt, store, tmp / "e.h5ad", level="site", batch_size=args.batch, num_workers=0, progress=False)
        e2e = len(tiles) / (time.perf_counter() - t0)
    mfu = flops / args.batch * model_rate / peak
    lines = [
        f"Command: `.venv/bin/python benchmarks/bench_embed.py --sites {args.sites} --batch {args.batch}`.",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, fp32; matmul peak {peak / 1e9:.1f} GFLOP/s.",
        "",
        "| what | tiles/s (256 x 256 x 6) |",
        "|---|---:|",
        f"| model only: mae_vit_small_patch16_256 `embed`, batch {args.batch}, {flops / args.batch / 1e9:.1f} GFLOP "
        f"per tile | {model_rate:.2f} (MFU {mfu:.0%}) |",
        f"| loader alone, 0 workers | {loader_rates[0]:.1f} |",
        f"| loader alone, 2 workers | {loader_rates[2]:.1f} |",
        f"| `morphoscale embed` end to end ({args.sites} sites x 4 tiles, site level) | {e2e:.2f} |",
    ]
    write_section("embed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
