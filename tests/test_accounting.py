"""The time, memory and FLOP accounting of training agrees with independent measurements of
known workloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch


class _Linear(torch.nn.Module):
    """A model whose training FLOPs are known: y = W x, loss = mean(y^2)."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.fc = torch.nn.Linear(d_in, d_out, bias=False)

    def training_loss(self, batch, generator=None):
        y = self.fc(batch["image"].flatten(1))
        return {"loss": (y**2).mean()}, None


def test_flops_match_the_analytic_count_and_leave_the_model_alone():
    from morphoscale.train.accounting import count_training_flops

    n, d_in, d_out = 16, 3 * 8 * 8, 40
    model = _Linear(d_in, d_out)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = {"image": torch.randn(n, 3, 8, 8)}
    # forward 2*n*d_in*d_out; backward: the weight gradient only (the input needs none), as much again
    assert count_training_flops(model, batch) == 2 * (2 * n * d_in * d_out)
    assert model.fc.weight.grad is None
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_mae_flops_per_image_scale_with_the_encoder():
    from morphoscale.models.registry import create_model
    from morphoscale.train.accounting import count_training_flops

    ch = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
    batch = {"image": torch.randn(2, 6, 64, 64)}
    small = count_training_flops(create_model("mae_vit_tiny_patch8_64", ch, depth=2), batch)
    deep = count_training_flops(create_model("mae_vit_tiny_patch8_64", ch, depth=4), batch)
    # two more encoder blocks on the 16 visible of 64 tokens: each block costs the same
    block = deep - small
    assert block > 0
    assert count_training_flops(create_model("mae_vit_tiny_patch8_64", ch, depth=6), batch) == pytest.approx(
        small + 2 * block, rel=1e-9
    )


def test_peak_memory_sees_a_known_allocation():
    """In a fresh process (the peak is a high-water mark over a process's life)."""
    import subprocess
    import sys

    code = (
        "import os, numpy as np\nfrom morphoscale.memory import peak_rss_mb\n"
        "now = int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20\n"
        "peak = peak_rss_mb()\nx = np.ones(600 * 2**20 // 8)\nprint(now, peak, peak_rss_mb())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    now, peak_before, after = map(float, r.stdout.split())
    # 600 MiB touched on top of the resident set: the high-water mark rises to it, no further
    assert now + 570 <= after <= max(peak_before, now + 600) + 60


def test_wall_time_and_images_of_a_run_agree_with_the_clock(sim_store, tmp_path, monkeypatch):
    """A known workload: every step sleeps 0.2 s more. The recorded wall time covers the five
    steps (at least 1 s) and no more than the clock around the whole call."""
    import json
    import time

    from morphoscale.train.fit import TrainConfig, train
    from morphoscale.train.module import TrainingModule

    real = TrainingModule.training_step

    def slow(self, batch, batch_idx):
        time.sleep(0.2)
        return real(self, batch, batch_idx)

    monkeypatch.setattr(TrainingModule, "training_step", slow)
    t0 = time.perf_counter()
    train(
        TrainConfig(
            model="mae_vit_tiny_patch8_64", model_overrides={"depth": 1}, batch_size=4, max_steps=5, warmup_steps=1
        ),
        sim_store,
        tmp_path / "r",
        progress=False,
    )
    outside = time.perf_counter() - t0
    rec = json.loads((tmp_path / "r" / "resources.json").read_text())
    assert 1.0 <= rec["wall_seconds"] <= outside
    assert rec["images_seen"] == 20 and rec["optimizer_steps"] == 5
    assert rec["images_per_second"] == pytest.approx(20 / rec["wall_seconds"], rel=1e-2)
    assert rec["parameters"] > 0 and rec["training_flops"] == pytest.approx(rec["flops_per_image"] * 20)


def test_the_rss_sampler_sees_a_known_allocation_and_forgets_earlier_peaks():
    import time

    from morphoscale.memory import RssSampler, rss_mb

    big = np.ones(500 * 2**20 // 8)  # an earlier run's peak ...
    del big
    base = rss_mb()
    s = RssSampler(0.01).start()
    x = np.ones(300 * 2**20 // 8)  # ... and this run's: 300 MiB held for a while
    time.sleep(0.1)
    peak = s.stop()
    del x
    assert base + 280 <= peak <= base + 360
