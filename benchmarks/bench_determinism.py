"""What the pinned kernels and thread-invariant sums cost: CPU training steps per second of
the demo's MAE (ViT-Ti/8, 64 px, batch 32) and WSL CNN (batch 32), pinned against the
machine's native kernels (MORPHOSCALE_NATIVE_KERNELS=1), each in a fresh process, in
alternating pairs.

    .venv/bin/python benchmarks/bench_determinism.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import morphoscale, torch
from morphoscale.determinism import thread_invariant
from morphoscale.train.module import TrainingModule
preset, steps = sys.argv[1], int(sys.argv[2])
ch = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
torch.manual_seed(0)
m = TrainingModule(preset, ch, classes=[str(i) for i in range(16)])
opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
x = torch.randn(32, 6, 64, 64)
batch = {"image": x, "label": torch.arange(32) % 16, "batch": torch.zeros(32, dtype=torch.long)}
times = []
with thread_invariant(m):
    for i in range(steps + 2):
        t = time.perf_counter()
        loss, _ = m(batch, generator=torch.Generator().manual_seed(i))
        loss["loss"].backward(); opt.step(); opt.zero_grad()
        times.append(time.perf_counter() - t)
print(json.dumps({"step_s": sorted(times[2:])[len(times[2:]) // 2], "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def one(preset: str, native: bool, steps: int) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "ATEN_CPU_CAPABILITY",
            "MKL_CBWR",
            "ONEDNN_MAX_CPU_ISA",
            "OPENBLAS_CORETYPE",
            "NPY_DISABLE_CPU_FEATURES",
        )
    }
    if native:
        env["MORPHOSCALE_NATIVE_KERNELS"] = "1"
    res = subprocess.run(
        [sys.executable, "-c", CHILD, preset, str(steps)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(pairs: int = 3, steps: int = 8) -> None:
    print(f"torch threads: {os.cpu_count()} cores; median step of {steps}, {pairs} alternating pairs")
    print("| model | native kernels (s/step) | pinned + thread-invariant (s/step) | pinned / native |")
    print("|---|---:|---:|---:|")
    for preset in ("mae_vit_tiny_patch8_64", "wsl_midl_cnn_64"):
        nat, pin = [], []
        for _ in range(pairs):
            n, p = one(preset, True, steps), one(preset, False, steps)
            nat.append(n["step_s"])
            pin.append(p["step_s"])
        a, b = statistics.median(nat), statistics.median(pin)
        print(f"| {preset} ({n['capability']} vs {p['capability']}) | {a:.3f} | {b:.3f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
