"""Training throughput and model FLOPs utilization, beside the reference's step.

    .venv/bin/python benchmarks/bench_train.py [--steps 5] [--device cuda] [--precision 32 bf16-mixed] [--compile]

For each preset: one optimizer step (forward, backward, AdamW) is counted with
torch.utils.flop_counter (matmul and convolution FLOPs), then timed over --steps
steps after a warm-up; MFU = achieved FLOP/s over the FLOP/s of a 4096^3 matmul in the
compute precision, measured in the same run. Images: 6 channels, self-standardized noise
(throughput does not depend on pixel values). Each precision named is run (autocast:
weights and optimizer state fp32). --compile adds the torch.compile'd step. Where a
checkout of recursionpharma/maes_microscopy is found (--reference, default
~/.cache/morphoscale/maes_microscopy; benchmarks/_maes_reference.py), its ViT-S/16 MAE and
CA-MAE step run in the same run, on the same device and precision.
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import argparse
import os
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import _maes_reference
from _report import cpu_name, write_section
from morphoscale.compute import autocast, compiled
from morphoscale.models.registry import create_model

CH6 = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
CASES = [
    ("mae_vit_tiny_patch8_64", 64, 32),
    ("mae_vit_small_patch16_256", 256, 16),
    ("ca_mae_vit_small_patch16_256", 256, 16),
]
# on a GPU: the OpenPhenom-like CA-MAE and the paper's headline MAE ViT-L/8 at 256 px
GPU_CASES = [
    ("mae_vit_small_patch16_256", 256, 64),
    ("ca_mae_vit_small_patch16_256", 256, 32),
    ("mae_vit_large_patch8_256", 256, 16),
]
REFERENCE_OF = {"mae_vit_small_patch16_256", "ca_mae_vit_small_patch16_256"}  # the reference's models of these kinds


def matmul_peak(n: int = 4096, repeats: int = 3, device: str = "cpu", precision: str = "32") -> float:
    dtype = {"32": torch.float32, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[precision]
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b), device) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn, device: str = "cpu") -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_rate(
    name: str,
    size: int,
    batch: int,
    steps: int,
    device: str = "cpu",
    precision: str = "32",
    compile: bool = False,
    reference: dict | None = None,
) -> dict:
    """Images/s of full optimizer steps of a preset (or, with `reference`, of the reference's
    model of that preset's kind)."""
    torch.manual_seed(0)
    if reference is not None:
        model = _maes_reference.ReferenceMAE(
            reference,
            channel_agnostic=name.startswith("ca_"),
            **({"decoder_dim": 256, "decoder_depth": 4, "decoder_heads": 8} if name.startswith("ca_") else {}),
        )
        eager_loss = model
    else:
        model = create_model(name, CH6)
        eager_loss = lambda x: model(x)[0]["loss"]  # noqa: E731
    model.to(device)
    loss_of = compiled(eager_loss, name) if compile else eager_loss
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 6, size, size, device=device)

    def step():
        with autocast(torch.device(device).type, precision):
            loss = loss_of(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (and compilation)
    with FlopCounterMode(display=False) as fc:
        with autocast(torch.device(device).type, precision):
            eager_loss(x).backward()
    opt.zero_grad(set_to_none=True)
    flops = fc.get_total_flops()
    step()
    t = _timed(lambda: [step() for _ in range(steps)], device)
    peak_mem = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {
        "name": ("reference " if reference is not None else "") + name,
        "size": size,
        "batch": batch,
        "precision": precision,
        "compile": compile,
        "img_s": batch * steps / t,
        "flops_per_img": flops / batch,
        "flop_s": flops * steps / t,
        "peak_mem_mb": peak_mem,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16-mixed", "16-mixed"])
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd step")
    ap.add_argument(
        "--reference", type=Path, default=_maes_reference.DEFAULT, help="a checkout of recursionpharma/maes_microscopy"
    )
    ap.add_argument(
        "--cases",
        nargs="+",
        default=None,
        help="PRESET:CROP:BATCH (default: the CPU trio; on a GPU the paper's presets)",
    )
    ap.add_argument("--peak-size", type=int, default=4096, help="side of the matmul that measures the peak")
    ap.add_argument("--section", default=None, help="BENCHMARKS.md section to write (default: train, or train-DEVICE)")
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    cases = (
        [(c.split(":")[0], int(c.split(":")[1]), int(c.split(":")[2])) for c in args.cases]
        if args.cases
        else (GPU_CASES if gpu else CASES)
    )
    ref = _maes_reference.load(args.reference)
    peaks = {p: matmul_peak(args.peak_size, device=args.device, precision=p) for p in args.precision}
    rows = []
    for name, size, batch in cases:
        for precision in args.precision:
            steps = args.steps if size > 64 or gpu else 4 * args.steps
            variants = [False, True] if args.compile else [False]
            for comp in variants:
                rows.append(train_rate(name, size, batch, steps, args.device, precision, comp))
                print(f"{name} {precision} compile={comp}: {rows[-1]['img_s']:.2f} images/s", flush=True)
            if ref is not None and name in REFERENCE_OF:
                rows.append(train_rate(name, size, batch, steps, args.device, precision, False, reference=ref))
                print(f"reference {name} {precision}: {rows[-1]['img_s']:.2f} images/s", flush=True)
    peaks = {p: max(v, matmul_peak(args.peak_size, device=args.device, precision=p)) for p, v in peaks.items()}
    device_name = torch.cuda.get_device_name() if gpu else f"{cpu_name()}, {os.cpu_count()} cores"
    env = "MORPHOSCALE_NATIVE_KERNELS=1 " if os.environ.get("MORPHOSCALE_NATIVE_KERNELS") == "1" else ""
    flags = " ".join(
        [f"--steps {args.steps}"]
        + ([f"--device {args.device}"] if gpu else [])
        + [f"--precision {' '.join(args.precision)}"]
        + (["--compile"] if args.compile else [])
        + ([f"--cases {' '.join(args.cases)}"] if args.cases else [])
        + ([f"--section {args.section}"] if args.section else [])
        + ([f"--peak-size {args.peak_size}"] if args.peak_size != 4096 else [])
    )
    lines = [
        f"Command: `{env}.venv/bin/python benchmarks/bench_train.py {flags}`.",
        f"Machine: {device_name}, torch {torch.__version__}, {torch.get_num_threads()} threads; CPU kernels "
        + (
            "native (MORPHOSCALE_NATIVE_KERNELS=1: AVX-512 / AMX where the CPU has them)."
            if os.environ.get("MORPHOSCALE_NATIVE_KERNELS") == "1"
            else "pinned to AVX2 (morphoscale's default, docs/reliability.md: same numbers on every machine)."
        ),
        f"Matmul peak ({args.peak_size}^3, best of the runs before and after): "
        + ", ".join(f"{p}: {v / 1e9:.1f} GFLOP/s" for p, v in peaks.items())
        + ".",
        "Reference: "
        + (
            f"recursionpharma/maes_microscopy at {args.reference}"
            if ref is not None
            else f"not found (no checkout at {args.reference})"
        )
        + ".",
        "",
        "| model | crop | batch | precision | compiled | images/s | GFLOP per image (fwd+bwd) | achieved GFLOP/s | MFU | vs reference |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base = next(
            (q for q in rows if q["name"] == "reference " + r["name"] and q["precision"] == r["precision"]), None
        )
        vs = f"{r['img_s'] / base['img_s']:.2f}x" if base is not None else "-"
        lines.append(
            f"| {r['name']} | {r['size']} | {r['batch']} | {r['precision']} | {'yes' if r['compile'] else 'no'} | {r['img_s']:.2f} | "
            f"{r['flops_per_img'] / 1e9:.1f} | {r['flop_s'] / 1e9:.1f} | {r['flop_s'] / peaks[r['precision']]:.0%} | {vs} |"
        )
    write_section(args.section or ("train" if not gpu else "train-gpu"), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
