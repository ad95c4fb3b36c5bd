"""Same seed, same numbers on CPU whatever the thread count (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from morphoscale.determinism import thread_invariant, thread_invariant_layer_norm_class
from morphoscale.train.module import TrainingModule

PRESETS = ["mae_vit_tiny_patch8_64", "ca_mae_vit_tiny_patch8_64", "wsl_midl_cnn_64", "byol_midl_cnn_64"]
CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]


def _batch(preset: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(16, len(CHANNELS), 64, 64, generator=g)
    batch = {"image": image, "label": torch.arange(16) % 4, "batch": torch.zeros(16, dtype=torch.long)}
    if preset.startswith("byol"):
        batch = {"views": [image, image.flip(-1)], "label": batch["label"], "batch": batch["batch"]}
    return batch


def _one_step_gradients(preset: str, threads: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = TrainingModule(preset, CHANNELS, classes=["a", "b", "c", "d"], n_global=2)
    torch.set_num_threads(threads)
    with thread_invariant(module):
        losses, _ = module(_batch(preset), generator=torch.Generator().manual_seed(1))
        losses["loss"].backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("preset", PRESETS)
def test_one_training_step_gives_bitwise_equal_gradients_on_one_and_two_threads(preset):
    before = torch.get_num_threads()
    try:
        one, two = _one_step_gradients(preset, 1), _one_step_gradients(preset, 2)
    finally:
        torch.set_num_threads(before)
    assert one.keys() == two.keys() and len(one) > 4
    differ = [n for n in one if not torch.equal(one[n], two[n])]
    assert not differ, f"{len(differ)} gradients differ between 1 and 2 threads, e.g. {differ[:3]}"


def test_the_thread_invariant_layer_norm_is_layer_norm():
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(48)
    torch.nn.init.normal_(ln.weight)
    torch.nn.init.normal_(ln.bias)
    x = torch.randn(7, 33, 48, requires_grad=True)
    ln(x).pow(2).sum().backward()
    ref = [t.grad.clone() for t in (x, ln.weight, ln.bias)]
    y_ref = ln(x).detach()
    for t in (x, ln.weight, ln.bias):
        t.grad = None
    ln.__class__ = thread_invariant_layer_norm_class()
    y = ln(x)
    y.pow(2).sum().backward()
    torch.testing.assert_close(y.detach(), y_ref, rtol=0, atol=1e-6)
    for got, want in zip((x.grad, ln.weight.grad, ln.bias.grad), ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_thread_invariant_restores_the_model_and_the_backend():
    module = TrainingModule("mae_vit_tiny_patch8_64", CHANNELS)
    classes = {type(m) for m in module.modules()}
    with thread_invariant(module):
        assert not torch.backends.mkldnn.enabled
        assert thread_invariant_layer_norm_class() in {type(m) for m in module.modules()}
    assert torch.backends.mkldnn.enabled
    assert {type(m) for m in module.modules()} == classes


def _cli(args: list, threads: int, tmp: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    res = subprocess.run(
        [sys.executable, "-m", "morphoscale", *map(str, args), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert res.returncode == 0, res.stderr[-2000:]


def test_wsl_training_and_features_of_a_tiny_screen_are_equal_on_one_and_two_threads(sim_store, tmp_path):
    import anndata as ad

    cfg = tmp_path / "wsl.yaml"
    cfg.write_text(
        "model: wsl_midl_cnn_64\nbatch_size: 16\nmax_steps: 6\nwarmup_steps: 2\nlr: 1.0e-3\ncheckpoint_every: 100\npreview_every: 100\n"
    )
    states, feats = [], []
    for threads in (1, 2):
        run = tmp_path / f"wsl{threads}"
        _cli(["train", "--store", sim_store, "--out", run, "--config", cfg], threads, tmp_path)
        states.append(torch.load(run / "model.ckpt", map_location="cpu", weights_only=False)["state_dict"])
        assert json.loads((run / "config.json").read_text())["determinism"]["threads"] == threads
        out = tmp_path / f"features{threads}.h5ad"
        _cli(["features", "--store", sim_store, "--out", out, "--workers", threads], threads, tmp_path)
        feats.append(ad.read_h5ad(out).X)
    differ = [k for k in states[0] if not torch.equal(states[0][k], states[1][k])]
    assert not differ, (
        f"{len(differ)} of {len(states[0])} trained tensors differ between 1 and 2 threads, e.g. {differ[:3]}"
    )
    assert feats[0].shape == feats[1].shape and np.array_equal(feats[0], feats[1], equal_nan=True)


def _environment(extra: dict) -> dict:
    code = (
        "import json, os, morphoscale; "
        "print(json.dumps({k: os.environ.get(k) for k in ('MKL_CBWR', 'ATEN_CPU_CAPABILITY', 'MKL_DYNAMIC')}))"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "MKL_DYNAMIC", "MORPHOSCALE_NATIVE_KERNELS")
    }
    res = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def test_importing_morphoscale_pins_the_kernels_unless_told_otherwise():
    pinned = _environment({})
    assert pinned["MKL_DYNAMIC"] == "FALSE"
    if "avx2" in Path("/proc/cpuinfo").read_text():
        assert (
            pinned["ATEN_CPU_CAPABILITY"] == "avx2" and pinned["MKL_CBWR"] == "AVX2,STRICT"
        )  # AUTO would follow the CPU
    assert (
        _environment({"ATEN_CPU_CAPABILITY": "default"})["ATEN_CPU_CAPABILITY"] == "default"
    )  # the user's choice stays
    assert _environment({"MORPHOSCALE_NATIVE_KERNELS": "1"}) == {
        "MKL_CBWR": None,
        "ATEN_CPU_CAPABILITY": None,
        "MKL_DYNAMIC": None,
    }


@pytest.mark.parametrize("dims", [(64, 24), (8, 6, 9, 9)])
def test_the_thread_invariant_batch_norm_is_batch_norm(dims):
    import copy

    from morphoscale.determinism import thread_invariant_batch_norm_classes

    torch.manual_seed(0)
    plain = (torch.nn.BatchNorm1d if len(dims) == 2 else torch.nn.BatchNorm2d)(dims[1])
    torch.nn.init.normal_(plain.weight)
    invariant = copy.deepcopy(plain)
    invariant.__class__ = thread_invariant_batch_norm_classes()[type(plain)]
    results = []
    for bn in (plain, invariant):
        x = torch.randn(*dims, generator=torch.Generator().manual_seed(1), requires_grad=True)
        y = bn(x)
        y.pow(3).sum().backward()
        bn(x.detach() * 2)  # a second step: the running statistics' average
        bn.eval()
        results.append(
            (
                y.detach(),
                x.grad,
                bn.weight.grad,
                bn.bias.grad,
                bn.running_mean,
                bn.running_var,
                bn.num_batches_tracked,
                bn(x).detach(),
            )
        )
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
