"""Training throughput and model FLOPs utilization on this machine.

    .venv/bin/python benchmarks/bench_train.py [--steps 5]

For each preset: one optimizer step (forward, backward, AdamW) is counted with
torch.utils.flop_counter (matmul and convolution FLOPs), then timed over --steps
steps after a warm-up; MFU = achieved FLOP/s over the FLOP/s of a 4096^3 fp32 matmul
measured in the same run. Images: 6 channels, self-standardized noise (throughput does
not depend on pixel values).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from _report import cpu_name, write_section
from morphoscale.models.registry import create_model

CH6 = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
CASES = [("mae_vit_tiny_patch8_64", 64, 32), ("mae_vit_small_patch16_256", 256, 16), ("ca_mae_vit_small_patch16_256", 256, 16)]


def matmul_peak(n: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def train_rate(name: str, size: int, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, CH6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 6, size, size)

    def step():
        loss = model(x)[0]["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    step()
    t = _timed(lambda: [step() for _ in range(steps)])
    return {"name": name, "size": size, "batch": batch, "img_s": batch * steps / t, "flops_per_img": flops / batch, "flop_s": flops * steps / t}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    peak_before = matmul_peak()
    rows = [train_rate(n, s, b, args.steps if s > 64 else 4 * args.steps) for n, s, b in CASES]
    peak = max(peak_before, matmul_peak())
    lines = [
        f"Command: `.venv/bin/python benchmarks/bench_train.py --steps {args.steps}`.",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, fp32.",
        f"Matmul peak (4096^3 fp32, best of the runs before and after): {peak / 1e9:.1f} GFLOP/s.",
        "",
        "| preset | crop | batch | images/s | GFLOP per image (fwd+bwd) | achieved GFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['size']} | {r['batch']} | {r['img_s']:.2f} | {r['flops_per_img'] / 1e9:.1f} | {r['flop_s'] / 1e9:.1f} | {r['flop_s'] / peak:.0%} |")
    write_section("train", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
