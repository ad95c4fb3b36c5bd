"""The baselines (WSL, autoencoder, regularized autoencoder, BYOL, random init) and the crop
strategies: the facts the papers' comparisons rest on, and each paradigm end to end."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CH6 = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]


def test_the_midl_simple_cnn_encoder_has_24888_parameters_and_a_2048_d_embedding():
    from morphoscale.models.backbones import MIDLSimpleCNN
    from morphoscale.models.registry import create_model, encoder_parameters

    one = MIDLSimpleCNN(in_chans=1, img_size=64)
    assert sum(p.numel() for p in one.parameters()) == 24_888
    assert one(torch.zeros(2, 1, 64, 64)).shape == (2, 2048)
    # generalized to C channels: only the first convolution grows, by 64 x 9 weights per channel
    ae = create_model("ae_midl_cnn_64", CH6)
    assert encoder_parameters(ae) == 24_888 + 5 * 64 * 9
    assert ae.embed(torch.zeros(3, 6, 64, 64), pooling="flatten").shape == (3, 2048)  # the paper's readout
    assert ae.embed(torch.zeros(3, 6, 64, 64)).shape == (
        3,
        64 + 32 + 16 + 8,
    )  # the default: every stage pooled over positions
    z, recon = ae(torch.zeros(3, 6, 64, 64))
    assert recon.shape == (3, 6, 64, 64)


def _rae_step(weight: float):
    """Encoder gradients of one regularized-autoencoder loss, same init and batch for every weight."""
    from morphoscale.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("rae_midl_cnn_64", CH6, n_classes=4, classifier_weight=weight)
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.randn(8, 6, 64, 64, generator=g), "label": torch.arange(8) % 4}
    losses, _ = model.training_loss(batch)
    losses["loss"].backward()
    return [p.grad.clone() for p in model.encoder.parameters()], losses


def test_the_regularizer_gradient_reaches_the_encoder():
    plain, l0 = _rae_step(0.0)
    regularized, l1 = _rae_step(1.0)
    assert float(l1["loss"].detach()) > float(l0["loss"].detach())  # the classifier term is in the loss
    # same init, same batch: the encoder's gradient differs only by the classifier term, which is not zero
    diff = sum(float((a - b).abs().sum()) for a, b in zip(plain, regularized))
    assert diff > 1e-4 * sum(float(a.abs().sum()) for a in plain)
    # and a larger weight moves the encoder further from the plain autoencoder's update
    heavier, _ = _rae_step(5.0)
    diff5 = sum(float((a - b).abs().sum()) for a, b in zip(plain, heavier))
    assert diff5 > 2 * diff


def test_one_optimizer_step_changes_the_encoder_differently_with_the_classifier_term(sim_store, tmp_path):
    from morphoscale.train.checkpoint import load_module
    from morphoscale.train.fit import TrainConfig, train

    weights = {}
    for w in (0.0, 1.0):
        cfg = TrainConfig(
            model="rae_midl_cnn_64",
            model_overrides={"classifier_weight": w},
            batch_size=8,
            max_steps=1,
            warmup_steps=0,
            lr=1e-3,
        )
        ckpt = train(cfg, sim_store, tmp_path / f"w{w}", progress=False)
        weights[w] = load_module(ckpt).model.encoder.state_dict()
    init = TrainConfig(model="rae_midl_cnn_64", random_init=True)
    start = load_module(train(init, sim_store, tmp_path / "init", progress=False)).model.encoder.state_dict()
    for k in start:
        d0, d1 = weights[0.0][k] - start[k], weights[1.0][k] - start[k]
        assert d0.abs().sum() > 0 and d1.abs().sum() > 0
    assert any(not torch.allclose(weights[0.0][k], weights[1.0][k]) for k in start)


def test_byol_target_is_an_exponential_moving_average_of_the_online_network():
    from morphoscale.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("byol_midl_cnn_64", CH6[:2], ema_decay=0.9)
    assert all(not p.requires_grad for p in model.target_parameters())
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(torch.randn_like(p))
    before = [t.clone() for t in model.target_parameters()]
    online = [o.clone() for o in model.online_parameters()]
    model.after_optimizer_step(step=3, max_steps=10)
    for t, b, o in zip(model.target_parameters(), before, online):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    # the cosine schedule starts at the base decay and ends at 1
    cos = create_model("byol_midl_cnn_64", CH6[:2], ema_decay=0.99, ema_schedule="cosine")
    assert cos.ema_decay(0, 100) == pytest.approx(0.99)
    assert cos.ema_decay(50, 100) == pytest.approx(0.995)
    assert cos.ema_decay(100, 100) == pytest.approx(1.0)


def test_byol_loss_is_the_symmetric_normalized_prediction_error():
    from morphoscale.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("byol_midl_cnn_64", CH6[:2]).eval()
    v1, v2 = torch.randn(4, 2, 64, 64), torch.randn(4, 2, 64, 64)
    losses, _ = model.training_loss({"views": [v1, v2], "n_global": 2})

    def q(v):
        return torch.nn.functional.normalize(model.predictor(model.projector(model.encoder(v))), dim=-1)

    def z(v):
        return torch.nn.functional.normalize(model.target_projector(model.target_encoder(v)), dim=-1)

    # eval mode: BatchNorm uses running statistics, so the views can be pushed one at a time
    expected = ((2 - 2 * (q(v1) * z(v2)).sum(-1)).mean() + (2 - 2 * (q(v2) * z(v1)).sum(-1)).mean()) / 2
    torch.testing.assert_close(losses["loss"], expected)
    assert 0 <= float(losses["loss"].detach()) <= 4


def test_crop_strategies_give_the_configured_view_sizes(sim_store):
    from morphoscale.data.datasets import CropDataset
    from morphoscale.data.transforms import Augment, MultiCrop
    from morphoscale.train.module import TrainingModule

    multi = CropDataset(sim_store, 48, Augment.random(), multicrop=MultiCrop(48, 2, 24, 3), seed=0)
    item = multi[5]
    assert [tuple(v.shape) for v in item["views"]] == [(6, 48, 48)] * 2 + [(6, 24, 24)] * 3
    one = CropDataset(sim_store, 40, Augment.none(), n_views=2, seed=0)
    a, b = one[3]["views"]
    torch.testing.assert_close(a, b)  # one crop: the same place; views differ only by augmentation
    aug = CropDataset(sim_store, 40, Augment.random(), n_views=2, seed=0)
    a, b = aug[3]["views"]
    assert a.shape == b.shape == (6, 40, 40)
    assert not torch.equal(a, b) or torch.equal(a.flip(-1), b)  # augmented independently
    single = CropDataset(sim_store, 32, seed=0)[0]
    assert single["image"].shape == (6, 32, 32) and "views" not in single

    # single-view models see local views resized to the global size, each as one more image
    module = TrainingModule("ae_midl_cnn_64", CH6, max_steps=1, classes=["a", "b"])
    batch = torch.utils.data.default_collate([multi[i] for i in range(4)])
    flat = module.model_batch(batch)
    assert flat["image"].shape == (4 * 5, 6, 48, 48)
    assert flat["label"].tolist() == batch["label"].tolist() * 5
    assert module.images_per_step(batch) == 20


def test_by_batch_order_draws_every_mini_batch_from_one_experimental_batch(sim_store):
    from morphoscale.data.datasets import CropDataset

    ds = CropDataset(sim_store, 32, seed=3, order="by_batch", group_size=8, length=8 * 20)
    sites = [ds.site_of(i) for i in range(len(ds))]
    groups = np.asarray([ds.batches[s] for s in sites]).reshape(20, 8)
    assert (groups == groups[:, :1]).all()
    assert set(groups[:, 0]) == {0, 1}  # both batches take turns
    assert sites == [
        CropDataset(sim_store, 32, seed=3, order="by_batch", group_size=8).site_of(i) for i in range(len(ds))
    ]
    # within a batch, sites are drawn without replacement until the batch is used up
    b0 = [s for s, g in zip(sites, groups.ravel()) if g == 0]
    n0 = int((ds.batches == 0).sum())
    assert len(set(b0[:n0])) == min(n0, len(b0))


def test_adabn_estimates_exact_per_batch_statistics():
    from morphoscale.models.adabn import batchnorm_state, estimate_batchnorm_state

    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).eval()
    net[0].running_mean.fill_(7.0)
    chunks = [torch.randn(5, 3, 4, 4) * 2 + 1 for _ in range(3)]
    ((mean, var),) = estimate_batchnorm_state(net, chunks)
    x = torch.cat(chunks)
    torch.testing.assert_close(mean, x.mean(dim=(0, 2, 3)))
    # momentum None averages the per-chunk unbiased variances (chunks of equal size)
    torch.testing.assert_close(var, torch.stack([c.var(dim=(0, 2, 3), unbiased=True) for c in chunks]).mean(0))
    assert float(batchnorm_state(net)[0][0][0]) == 7.0 and not net.training  # the model's own state is untouched


def test_adabn_embeddings_use_the_statistics_of_each_sites_batch(sim_store, tmp_path):
    import anndata as ad

    from morphoscale.data.datasets import TileDataset
    from morphoscale.data.store import ImageStore
    from morphoscale.embed import embed
    from morphoscale.models.adabn import estimate_batchnorm_state, load_batchnorm_state
    from morphoscale.train.checkpoint import load_module
    from morphoscale.train.fit import TrainConfig, train

    cfg = TrainConfig(model="wsl_resnet18_64_adabn", batch_size=8, max_steps=3, warmup_steps=0, lr=1e-3)
    ckpt = train(cfg, sim_store, tmp_path / "wsl", progress=False)
    out = embed(ckpt, sim_store, tmp_path / "e.h5ad", level="site", progress=False)
    got = ad.read_h5ad(out).X

    model = load_module(ckpt).model.eval()
    store = ImageStore(sim_store)
    batches = store.sites["batch"].astype(str).to_numpy()
    expected = np.zeros_like(got)
    with torch.no_grad():
        for b in np.unique(batches):
            sites = np.flatnonzero(batches == b)
            tiles = torch.stack([t["image"] for t in TileDataset(store, 64, sites=sites)])
            load_batchnorm_state(model, estimate_batchnorm_state(model, tiles.split(64), forward=model.encoder))
            expected[sites] = model.embed(tiles).numpy()  # the default readout, under this batch's statistics
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # without adaptation the embeddings differ: the statistics do matter
    with torch.no_grad():
        plain = load_module(ckpt).model.eval().embed(torch.stack([t["image"] for t in TileDataset(store, 64)])).numpy()
    assert not np.allclose(plain, got, atol=1e-3)


def _losses(run: Path) -> list[float]:
    with open(run / "logs" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


PARADIGMS = ["wsl_midl", "wsl_resnet", "ae_midl", "rae_midl", "byol_midl", "mu_net", "ca_mae"]


@pytest.mark.parametrize("name", PARADIGMS)
def test_each_paradigm_trains_from_its_config_and_goes_through_map_and_bench(name, sim_store, tmp_path, capsys):
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    steps, bs = 40, 8 if name == "ca_mae" else 16  # CA-MAE: 6x the tokens of a ViT
    cfg.update(max_steps=steps, batch_size=bs, log_every=1, checkpoint_every=steps, preview_every=steps, warmup_steps=5)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, _, err = run_cli(
        capsys, "train", "--store", sim_store, "--out", tmp_path / "run", "--config", tmp_path / "c.yaml", "--quiet"
    )
    assert rc == 0, err
    losses = _losses(tmp_path / "run")
    assert len(losses) == steps and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-8:]) < np.mean(losses[:8]), losses
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        seen = [float(r["train/images_seen"]) for r in csv.DictReader(f) if r.get("train/images_seen")]
    views = cfg.get("views", 1) if cfg.get("crop", "one") == "one" else cfg.get("n_global", 2) + cfg.get("n_local", 4)
    assert seen[-1] == steps * bs * views
    _embed_map_bench(tmp_path / "run" / "model.ckpt", sim_store, tmp_path, capsys)


def test_random_init_writes_the_untrained_seeded_model_and_embeds(sim_store, tmp_path, capsys):
    from morphoscale.models.registry import create_model
    from morphoscale.train.checkpoint import load_module

    rc, _, err = run_cli(
        capsys,
        "train",
        "--store",
        sim_store,
        "--out",
        tmp_path / "r",
        "--config",
        CONFIGS / "random_init.yaml",
        "--quiet",
    )
    assert rc == 0, err
    model = load_module(tmp_path / "r" / "model.ckpt").model
    # seeded like a training run of seed 0 (seed_everything before the model is built)
    import lightning as L

    L.seed_everything(0, verbose=False)
    fresh = create_model(model.preset, CH6)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    assert not (tmp_path / "r" / "checkpoints").exists()
    _embed_map_bench(tmp_path / "r" / "model.ckpt", sim_store, tmp_path, capsys)


def _embed_map_bench(ckpt, store, tmp_path, capsys):
    import json

    rc, _, err = run_cli(
        capsys, "embed", "--checkpoint", ckpt, "--store", store, "--out", tmp_path / "e.h5ad", "--quiet"
    )
    assert rc == 0, err
    rc, _, err = run_cli(
        capsys, "map", "--embeddings", tmp_path / "e.h5ad", "--align", "tvn", "--out", tmp_path / "m.h5ad"
    )
    assert rc == 0, err
    rc, _, err = run_cli(capsys, "bench", "--map", tmp_path / "m.h5ad", "--out", tmp_path / "b")
    assert rc == 0, err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary  # the bench suite ran on these embeddings


def test_baseline_config_errors_name_the_key(sim_store, tmp_path, capsys):
    from cli_helpers import assert_one_line_error

    cases = [
        ("model: byol_midl_cnn_64\n", "key 'views'"),
        ("model: ae_midl_cnn_64\nmodel_overrides: {backbone: resnet18}\n", "key 'backbone'"),
        ("model: wsl_midl_cnn_64\nmodel_overrides: {adabn: true}\n", "key 'model.adabn'"),
        ("model: byol_midl_cnn_64\nviews: 2\nmodel_overrides: {ema_schedule: linear}\n", "key 'model.ema_schedule'"),
        ("model: wsl_midl_cnn_64\ncrop: multi\nlocal_size: 99\n", "key 'local_size'"),
    ]
    for i, (text, expected) in enumerate(cases):
        (tmp_path / f"c{i}.yaml").write_text(text)
        rc, _, err = run_cli(
            capsys,
            "train",
            "--store",
            sim_store,
            "--out",
            tmp_path / f"o{i}",
            "--config",
            tmp_path / f"c{i}.yaml",
            "--quiet",
        )
        assert_one_line_error(rc, err, expected)


def test_baselines_refuse_poolings_and_layers_they_do_not_have(sim_store, tmp_path, capsys):
    from cli_helpers import assert_one_line_error

    cfg = {"model": "ae_midl_cnn_64", "random_init": True}
    (tmp_path / "ae.yaml").write_text(yaml.safe_dump(cfg))
    run_cli(
        capsys, "train", "--store", sim_store, "--out", tmp_path / "ae", "--config", tmp_path / "ae.yaml", "--quiet"
    )
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        tmp_path / "ae" / "model.ckpt",
        "--store",
        sim_store,
        "--out",
        tmp_path / "x.h5ad",
        "--pooling",
        "cls",
    )
    assert_one_line_error(rc, err, "--pooling/--layer", "pooling 'cls'")
    assert not (tmp_path / "x.h5ad").exists()
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        tmp_path / "ae" / "model.ckpt",
        "--store",
        sim_store,
        "--out",
        tmp_path / "x.h5ad",
        "--layer",
        "4",
    )
    assert_one_line_error(rc, err, "--pooling/--layer", "layer 4 is out of range", "4 (0..3")
    assert not (tmp_path / "x.h5ad").exists()
