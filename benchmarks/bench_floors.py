"""What the learning check's floors cost a masked model's training step (CPU).

    .venv/bin/python benchmarks/bench_floors.py [--steps 10]

Every training step of a masked model also measures, on the same images and mask, the loss
of predicting zero and of a Gaussian interpolation of the visible pixels
(models/masked.py; train/learning_check.py reads them). Timed here: one optimizer step
(forward, loss, backward, AdamW) with the floors, as training runs it, and without them (the
model's own loss only), median over --steps steps after a warm-up, each preset at its
demo-like batch.
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import argparse
import os
import platform
import statistics
import time

import torch

from _report import cpu_name, write_section
from morphoscale.models.registry import create_model

CH6 = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
CASES = [("mae_vit_tiny_patch8_64", 64, 32), ("mu_net_small", 64, 32)]


def step_seconds(model, imgs: torch.Tensor, floors: bool, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for k in range(steps + 2):
        t0 = time.perf_counter()
        if floors:
            losses, _ = model.training_loss({"image": imgs})
        else:
            losses = model(imgs)[0]
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        if k >= 2:  # warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for name, size, batch in CASES:
        model = create_model(name, CH6).train()
        imgs = torch.randn(batch, len(CH6), size, size)
        without = step_seconds(model, imgs, False, args.steps)
        with_floors = step_seconds(model, imgs, True, args.steps)
        rows.append((name, batch, size, without, with_floors))
    body = "\n".join(
        [
            f"Command: `.venv/bin/python benchmarks/bench_floors.py --steps {args.steps}`.",
            f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}.",
            "",
            "| preset | batch | px | step without the floors | step with them (as trained) | the floors' share |",
            "|---|---:|---:|---:|---:|---:|",
            *[
                f"| {n} | {b} | {s} | {a * 1e3:.0f} ms | {w * 1e3:.0f} ms | {(w - a) / w:.0%} |"
                for n, b, s, a, w in rows
            ],
        ]
    )
    print(body)
    write_section("floors", body)


if __name__ == "__main__":
    main()
