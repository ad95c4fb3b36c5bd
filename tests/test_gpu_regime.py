"""The GPU regime's parts, checked on the CPU: mixed precision, compile with its eager
fallback, fused attention, and a loader that gives the same batches whatever its workers
or where the transforms run."""

from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from morphoscale.compute import autocast, compiled, resolve_precision
from morphoscale.data.datasets import CropDataset
from morphoscale.data.transforms import Augment, standardize_and_augment
from morphoscale.errors import ConfigError
from morphoscale.models.registry import create_model

CH = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
# one preset per model family, small enough for a CPU test
FAMILIES = [
    "mae_vit_tiny_patch8_64",
    "ca_mae_vit_tiny_patch8_64",
    "mu_net_small",
    "wsl_midl_cnn_64",
    "wsl_vit_tiny_patch8_64",
    "ae_midl_cnn_64",
    "byol_midl_cnn_64",
    "byol_vit_tiny_patch8_64",
]


def _batch(model, n=4, size=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, len(CH), size, size, generator=g)
    if model.multi_view:
        return {"views": [x, x.flip(-1)], "n_global": 2}
    return {"image": x, "label": torch.arange(n) % 3, "batch": torch.zeros(n, dtype=torch.long)}


@pytest.mark.parametrize("preset", FAMILIES)
def test_a_bf16_autocast_train_step_and_embedding_of_each_family(preset):
    torch.manual_seed(0)
    model = create_model(preset, CH, n_classes=3)
    batch = _batch(model)
    fp32, _ = model.training_loss(batch, torch.Generator().manual_seed(1))
    with autocast("cpu", "bf16-mixed"):
        losses, _ = model.training_loss(batch, torch.Generator().manual_seed(1))
    loss = losses["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)  # weights stay fp32
    assert float(loss.detach()) == pytest.approx(float(fp32["loss"].detach()), rel=0.05, abs=0.02)

    model.eval()
    x = _batch(model)["views"][0] if model.multi_view else batch["image"]
    with torch.inference_mode():
        e32 = model.embed(x)
        with autocast("cpu", "bf16-mixed"):
            e16 = model.embed(x).float()
    assert e16.dtype == torch.float32 and torch.isfinite(e16).all()
    assert F.cosine_similarity(e16, e32).min() > 0.98


def test_precision_names_and_fp16_on_cpu():
    assert resolve_precision(None, on_gpu=False) == "32"
    assert resolve_precision(None, on_gpu=True) == "bf16-mixed"
    assert resolve_precision("32-true", on_gpu=False) == "32"
    with pytest.raises(ConfigError, match="16-mixed.*needs a GPU"):
        resolve_precision("16-mixed", on_gpu=False)
    with pytest.raises(ConfigError, match="'fp8' is not one of"):
        resolve_precision("fp8", on_gpu=True)


def test_a_failing_compile_warns_once_and_runs_eager(monkeypatch):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=broken_backend))
    torch._dynamo.reset()
    said = []
    f = compiled(lambda x: torch.sin(x) * 2, "a test function", warn=said.append)
    x = torch.randn(5)
    assert torch.equal(f(x), torch.sin(x) * 2)
    assert torch.equal(f(x), torch.sin(x) * 2)
    assert (
        len(said) == 1
        and said[0].startswith("warning: torch.compile of a test function failed")
        and "\n" not in said[0]
    )
    torch._dynamo.reset()


def test_a_model_error_is_not_taken_for_a_compile_failure():
    def bad(x):
        raise ValueError("the model's own error")

    f = compiled(bad, "bad", warn=lambda m: pytest.fail(m))
    with pytest.raises(ValueError, match="own error"):
        f(torch.zeros(1))
    torch._dynamo.reset()


@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler for torch.compile's CPU backend"
)
def test_the_compiled_training_step_of_a_tiny_mae_equals_eager():
    torch.manual_seed(0)
    model = create_model(
        "mae_vit_tiny_patch8_64",
        CH[:2],
        depth=1,
        decoder_depth=1,
        embed_dim=48,
        num_heads=3,
        decoder_embed_dim=32,
        decoder_num_heads=2,
    )
    x = torch.randn(2, 2, 64, 64)
    eager, _ = model.training_loss({"image": x}, torch.Generator().manual_seed(3))
    said = []
    fast = compiled(model.training_loss, "tiny", warn=said.append)
    got, _ = fast({"image": x}, torch.Generator().manual_seed(3))
    assert not said, said
    assert float(got["loss"].detach()) == pytest.approx(float(eager["loss"].detach()), rel=1e-4)
    got["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    torch._dynamo.reset()


VIT_PRESETS = [
    "mae_vit_tiny_patch8_64",
    "ca_mae_vit_tiny_patch8_64",
    "wsl_vit_tiny_patch8_64",
    "byol_vit_tiny_patch8_64",
]


@pytest.mark.parametrize("preset", VIT_PRESETS)
def test_every_attention_block_takes_the_fused_path(preset, monkeypatch):
    model = create_model(preset, CH, n_classes=3).eval()
    blocks = [m for m in model.modules() if hasattr(m, "fused_attn")]
    assert blocks and all(m.fused_attn for m in blocks)
    calls, ran = [], []
    for m in blocks:
        m.register_forward_hook(lambda mod, inp, out: ran.append(mod))
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    x = torch.randn(2, len(CH), 64, 64)
    with torch.inference_mode():
        if model.multi_view:
            model.embed(x)
        else:
            model.training_loss(
                {"image": x, "label": torch.zeros(2, dtype=torch.long), "batch": torch.zeros(2, dtype=torch.long)},
                torch.Generator().manual_seed(0),
            )
    assert ran and len(calls) == len(ran)  # every attention that ran went through the fused kernel


def test_pretrained_phenom_encoder_attention_is_fused():
    from morphoscale.models.pretrained import PhenomConfig, PhenomEncoder

    enc = PhenomEncoder(PhenomConfig(img_size=64, depth=2), CH)
    blocks = [m for m in enc.modules() if hasattr(m, "fused_attn")]
    assert blocks and all(m.fused_attn for m in blocks)


def test_device_transforms_give_the_cpu_crops(sim_store):
    """Raw crops (as stored) with their drawn augmentations, finished batch-wise where the
    batch is, equal the crops the dataset standardizes and augments one by one."""
    kw = dict(crop_size=32, augment=Augment.random(), seed=5, length=48, order="shuffle")
    cpu = CropDataset(sim_store, **kw)
    raw = CropDataset(sim_store, raw=True, **kw)
    items = [raw[i] for i in range(48)]
    assert items[0]["image"].dtype == torch.uint8
    done = standardize_and_augment(torch.stack([it["image"] for it in items]), torch.stack([it["aug"] for it in items]))
    want = torch.stack([cpu[i]["image"] for i in range(48)])
    assert torch.allclose(done, want, atol=1e-5)
    assert (torch.stack([it["aug"] for it in items])[:, 3] > 0).any()  # some crops were blurred


def test_the_loader_gives_the_same_batches_with_0_and_2_workers(sim_store):
    from morphoscale.train.data import StoreDataModule

    def batches(workers, device_transforms=False):
        dm = StoreDataModule(
            str(sim_store), 32, 8, 4, augment="random", num_workers=workers, seed=2, device_transforms=device_transforms
        )
        dm.setup()
        out = []
        for b in dm.train_dataloader():
            out.append(dm.on_after_batch_transfer(b, 0))
        return out

    a, b = batches(0), batches(2)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["site"], y["site"])
    c = batches(2, device_transforms=True)
    for x, y in zip(a, c):
        assert torch.allclose(x["image"], y["image"], atol=1e-5)


def test_train_and_embed_under_bf16_on_the_cpu(sim_store, tmp_path):
    import anndata as ad

    from morphoscale.embed import embed
    from morphoscale.train.fit import TrainConfig, train

    cfg = TrainConfig(
        model="mae_vit_tiny_patch8_64",
        batch_size=8,
        max_steps=3,
        warmup_steps=1,
        precision="bf16-mixed",
        probe_every=None,
    )
    ckpt = train(cfg, sim_store, tmp_path / "run", progress=False)
    e32 = embed(ckpt, sim_store, tmp_path / "e32.h5ad", progress=False)
    e16 = embed(ckpt, sim_store, tmp_path / "e16.h5ad", progress=False, precision="bf16-mixed")
    a, b = ad.read_h5ad(e32), ad.read_h5ad(e16)
    assert b.X.dtype == np.float32 and b.uns["provenance"]["precision"] == "bf16-mixed"
    cos = (a.X * b.X).sum(1) / np.linalg.norm(a.X, axis=1) / np.linalg.norm(b.X, axis=1)
    assert cos.min() > 0.98


def test_precision_is_checked_before_any_output(sim_store, tmp_path):
    from morphoscale.train.fit import TrainConfig, train

    with pytest.raises(ConfigError, match="16-mixed"):
        train(TrainConfig(precision="16-mixed"), sim_store, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_gpu_regime_configs_validate_and_build():
    from pathlib import Path

    from morphoscale.train.fit import load_train_config

    root = Path(__file__).resolve().parent.parent / "configs" / "gpu"
    names = sorted(root.glob("*.yaml"))
    assert len(names) >= 2
    for path in names:
        cfg = load_train_config(path)
        assert cfg.precision == "bf16-mixed" and cfg.compile and cfg.optimizer == "lion"
        with torch.device("meta"):
            model = create_model(cfg.model, CH, **cfg.model_overrides)
        assert model.cfg.img_size == cfg.crop_size == 256


def test_train_and_embed_refuse_an_output_inside_their_input(sim_store, tmp_path):
    from morphoscale.embed import embed
    from morphoscale.errors import InputError
    from morphoscale.train.fit import TrainConfig, train

    before = sorted(p.name for p in sim_store.iterdir())
    for out in (sim_store, sim_store / "run", sim_store.parent):
        with pytest.raises(InputError, match="is, holds or lies inside the input"):
            train(TrainConfig(max_steps=1), sim_store, out, overwrite=True, progress=False)
    with pytest.raises(InputError, match="inside the input"):
        embed(tmp_path / "x.ckpt", sim_store, sim_store / "e.h5ad", overwrite=True, progress=False)
    assert sorted(p.name for p in sim_store.iterdir()) == before


def test_a_config_error_leaves_no_output_folder(sim_store, tmp_path):
    from morphoscale.train.fit import TrainConfig, train

    with pytest.raises(ConfigError, match="crop_size"):
        train(TrainConfig(crop_size=4096), sim_store, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    from morphoscale.io import TRAINING_RUN, mark_output

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("an earlier run")
    mark_output(tmp_path / "old", TRAINING_RUN)  # as train marks its run folders
    with pytest.raises(ConfigError, match="crop_size"):
        train(TrainConfig(crop_size=4096), sim_store, tmp_path / "old", overwrite=True, progress=False)
    assert (tmp_path / "old" / "keep.txt").exists()  # --overwrite removes nothing until the config passed


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"mask_ratio": 1.2}, "mask_ratio"),
        ({"mask_ratio": 0.0}, "mask_ratio"),
        ({"patch_size": 7}, "patch_size"),
        ({"num_heads": 5}, "num_heads"),
        ({"decoder_num_heads": 3}, "decoder_num_heads"),
        ({"depth": 0}, "depth"),
    ],
)
def test_an_impossible_vit_config_names_its_key(overrides, key):
    with pytest.raises(ConfigError, match=f"key 'model.{key}'"):
        create_model("mae_vit_tiny_patch8_64", CH, **overrides)


def test_a_key_given_twice_in_a_yaml_config_is_an_error(tmp_path):
    from morphoscale.config import read_yaml

    (tmp_path / "c.yaml").write_text("lr: 1.0e-3\nmax_steps: 10\nlr: 3.0e-3\n")
    with pytest.raises(ConfigError, match="line 3.*key 'lr' is given twice"):
        read_yaml(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_bytes(b"lr: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not a text"):
        read_yaml(tmp_path / "d.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        read_yaml(tmp_path)
