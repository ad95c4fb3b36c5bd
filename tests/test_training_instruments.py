"""Seeing training work (issue 32): the learning check, readouts that pool, the fair floor's provenance."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run_cli

from morphoscale.models.masked import interpolate_visible, pixel_mask
from morphoscale.models.registry import create_model
from morphoscale.train.learning_check import summarize, verdict
from morphoscale.train.module import TrainingModule

CH = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]


def test_verdicts_name_the_floor_the_loss_cleared():
    assert verdict(1.5, 0.60, trivial=1.0, interpolation=0.73) == "beyond interpolation"
    assert verdict(1.5, 0.73, trivial=1.0, interpolation=0.73) == "only interpolating"  # level with it: not beyond
    assert verdict(1.5, 1.20, trivial=1.0, interpolation=0.73) == "above the trivial prediction"
    assert verdict(1.5, 1.49, trivial=1.0, interpolation=0.73) == "not learning"
    assert (
        verdict(1.0, 0.90, trivial=1.0, interpolation=1.10) == "beyond interpolation"
    )  # interpolation worse than zero
    assert verdict(4.0, 2.05, trivial=2.07) == "above the trivial prediction"  # within the 2% tolerance
    assert verdict(4.0, 1.0, trivial=2.07) == "beyond the trivial prediction"
    assert verdict(1.0, 0.5, trivial=None) == "loss falling (no trivial level for this model)"


def test_interpolation_keeps_the_visible_pixels_and_fills_a_constant_exactly():
    g = torch.Generator().manual_seed(0)
    hidden = (torch.rand(2, 3, 32, 32, generator=g) < 0.75).float()
    const = torch.full((2, 3, 32, 32), 2.5)
    torch.testing.assert_close(interpolate_visible(const, hidden, 4.0), const)
    noise = torch.randn(2, 3, 32, 32, generator=g)
    out = interpolate_visible(noise, hidden, 4.0)
    assert torch.equal(out[hidden == 0], noise[hidden == 0])
    # a smooth image is filled far better than by zero, white noise is not
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = torch.sin(xx / 6 + yy / 9).expand(2, 3, 32, 32)
    err = lambda x: ((interpolate_visible(x, hidden, 2.0) - x)[hidden == 1] ** 2).mean() / (x[hidden == 1] ** 2).mean()
    assert err(smooth) < 0.2 < 0.8 < err(noise)


def test_learning_check_says_not_learning_at_lr_0(sim_store, tmp_path, capsys):
    cfg = tmp_path / "lr0.yaml"
    cfg.write_text(
        "model: mae_vit_tiny_patch8_64\nbatch_size: 8\nmax_steps: 12\nwarmup_steps: 1\nlr: 0\nlog_every: 1\n"
    )
    rc, out, err = run_cli(capsys, "train", "--store", sim_store, "--out", tmp_path / "run", "--config", cfg, "--quiet")
    assert rc == 0, err
    check = json.loads((tmp_path / "run" / "learning_check.json").read_text())
    assert check["verdict"] == "not learning" and check["steps"] == 12
    assert "learning check: not learning" in err
    metrics = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    assert metrics["train/trivial"].notna().sum() == 12 and metrics["train/interpolation"].notna().sum() == 12
    # the floors are measured, not assumed: zero scores about 1 on self-standardized crops
    assert 0.8 < check["trivial_loss"] < 1.3 and check["first_loss"] == pytest.approx(check["final_loss"], rel=0.05)


def test_learning_check_says_beyond_interpolation_for_a_tiny_model_fitting_a_learnable_set():
    """Four fixed white-noise images: interpolation cannot fill their holes, memorizing can."""
    torch.manual_seed(0)
    small = {
        "depth": 2,
        "embed_dim": 64,
        "num_heads": 2,
        "decoder_embed_dim": 64,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
    }
    m = TrainingModule("mae_vit_tiny_patch8_64", CH[:3], model_overrides=small)
    imgs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    vals: dict[str, list[float]] = {"loss": [], "trivial": [], "interpolation": []}
    for step in range(150):
        losses, _ = m({"image": imgs}, generator=torch.Generator().manual_seed(step))
        losses["loss"].backward()
        opt.step()
        opt.zero_grad()
        for k in vals:
            vals[k].append(float(losses[k].detach()))
    s = summarize(vals["loss"], vals["trivial"], vals["interpolation"])
    assert s["verdict"] == "beyond interpolation", s


def test_a_classifier_logs_the_class_prior_as_its_trivial_level(sim_store, tmp_path, capsys):
    cfg = tmp_path / "wsl.yaml"
    cfg.write_text("model: wsl_midl_cnn_64\nbatch_size: 16\nmax_steps: 6\nwarmup_steps: 1\nlr: 1.0e-3\nlog_every: 1\n")
    rc, _, err = run_cli(capsys, "train", "--store", sim_store, "--out", tmp_path / "wsl", "--config", cfg, "--quiet")
    assert rc == 0, err
    from morphoscale.data.store import ImageStore

    freq = ImageStore(sim_store).sites["perturbation"].value_counts(normalize=True)
    entropy = float(-(freq * np.log(freq)).sum())
    check = json.loads((tmp_path / "wsl" / "learning_check.json").read_text())
    assert check["interpolation_loss"] is None
    assert check["trivial_loss"] == pytest.approx(entropy, rel=0.15)  # the prior's cross-entropy on the batches seen


READOUTS = {
    "mae_vit_tiny_patch8_64": ["mean", "cls"],
    "ca_mae_vit_tiny_patch8_64": ["mean", "cls", "per_channel"],
    "mu_net_small": ["mean", "concat"],
    "wsl_midl_cnn_64": ["mean", "concat", "flatten"],
    "wsl_resnet18_64": ["mean", "concat"],
    "wsl_vit_tiny_patch8_64": ["mean", "cls"],
    "ae_midl_cnn_64": ["mean", "concat"],
    "byol_midl_cnn_64": ["mean", "concat"],
}


@pytest.mark.parametrize("preset", READOUTS)
def test_every_model_family_takes_layer_and_pooling(preset):
    torch.manual_seed(0)
    m = create_model(preset, CH, n_classes=3).eval()
    x = torch.randn(2, 6, 64, 64)
    with torch.no_grad():
        for pooling in READOUTS[preset]:
            shallow, deep = m.embed(x, layer=0, pooling=pooling), m.embed(x, layer=-1, pooling=pooling)
            assert shallow.ndim == deep.ndim == 2 and len(shallow) == 2
            assert shallow.shape != deep.shape or not torch.allclose(shallow, deep)
        with pytest.raises(ValueError, match="layer 99 is out of range"):
            m.embed(x, layer=99)
        with pytest.raises(ValueError, match="pooling 'nope'"):
            m.embed(x, pooling="nope")


def test_cnn_site_embedding_ignores_tile_order_and_whole_tile_shifts(sim_store, tmp_path):
    """A site is the mean of its tiles' embeddings, each pooled over positions: visiting the
    tiles in another order or shifting the field by whole tiles leaves it (nearly) the same,
    and shifting the content by a few pixels moves it far less than the flattened map."""
    torch.manual_seed(0)
    m = create_model("wsl_midl_cnn_64", CH, n_classes=3).eval()
    g = torch.Generator().manual_seed(1)
    field = torch.nn.functional.avg_pool2d(torch.randn(1, 6, 132, 132, generator=g), 5, 1)[..., :128, :128]
    tiles = lambda f: torch.cat([f[..., i : i + 64, j : j + 64] for i in (0, 64) for j in (0, 64)])
    site = lambda f, pooling="mean": m.embed(tiles(f), pooling=pooling).mean(0)
    with torch.no_grad():
        base = site(field)
        reordered = m.embed(tiles(field).flip(0), pooling="mean").mean(0)
        rolled = site(torch.roll(field, shifts=(64, 64), dims=(-2, -1)))
        torch.testing.assert_close(reordered, base, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rolled, base, rtol=1e-5, atol=1e-6)
        shifted = torch.roll(field, shifts=(8, 8), dims=(-2, -1))
        change = lambda pooling: (
            (site(shifted, pooling) - site(field, pooling)).norm() / site(field, pooling).norm()
        ).item()
        assert change("mean") < 0.1 and change("mean") < change("flatten") / 3


def test_an_untrained_model_records_no_training_settings(sim_store, tmp_path, capsys):
    import anndata as ad

    cfg = tmp_path / "ri.yaml"
    cfg.write_text("model: wsl_midl_cnn_64\nrandom_init: true\n")
    rc, _, err = run_cli(capsys, "train", "--store", sim_store, "--out", tmp_path / "ri", "--config", cfg, "--quiet")
    assert rc == 0, err
    assert json.loads((tmp_path / "ri" / "config.json").read_text())["train"] == {
        "random_init": True,
        "model": "wsl_midl_cnn_64",
        "model_overrides": {},
        "seed": 0,
    }
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        tmp_path / "ri" / "model.ckpt",
        "--store",
        sim_store,
        "--out",
        tmp_path / "ri.h5ad",
        "--quiet",
    )
    assert rc == 0, err
    prov = ad.read_h5ad(tmp_path / "ri.h5ad").uns["provenance"]
    recorded = json.loads(prov["train_config"])
    assert recorded["random_init"] is True and "lr" not in recorded and "max_steps" not in recorded
    assert prov["pooling"] == "concat" and int(prov["layer"]) == -1  # a CNN's default readout (docs/embed.md)


def test_probes_run_along_training_and_land_in_metrics_csv(sim_store, tmp_path, capsys):
    truth = sim_store.parent / "tiny" / "ground_truth"
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        "model: mae_vit_tiny_patch8_64\nbatch_size: 8\nmax_steps: 4\nwarmup_steps: 1\nlr: 1.0e-3\nlog_every: "
        f"1\nprobe_sites: 48\nprobe_truth: {truth}\n"
        "probe_label: perturbation_type\n"
    )
    rc, _, err = run_cli(
        capsys,
        "train",
        "--store",
        sim_store,
        "--out",
        tmp_path / "run",
        "--config",
        cfg,
        "--probe-every",
        "2",
        "--quiet",
    )
    assert rc == 0, err
    m = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    probes = m.dropna(subset=["probe/knn_perturbation"])
    assert probes["step"].tolist() == [0, 2, 4]  # step 0: the untrained weights, the floor
    assert probes["probe/logistic_control"].between(0, 1).all() and probes["probe/knn_perturbation"].between(0, 1).all()
    assert probes["probe/decoding_r2"].notna().all() and (probes["probe/decoding_r2"] <= 1).all()
    assert (probes["probe/knn_chance"] > 0).all() and (probes["probe/seconds"] > 0).all()
    assert (
        probes["probe/knn_perturbation_type"].between(0, 1).all()
        and (probes["probe/knn_perturbation_type_chance"] > 0).all()
    )
    # a column the site table lacks is one line naming the key
    cfg.write_text("model: mae_vit_tiny_patch8_64\nmax_steps: 2\nprobe_every: 1\nprobe_label: nope\n")
    rc, _, err = run_cli(capsys, "train", "--store", sim_store, "--out", tmp_path / "bad", "--config", cfg, "--quiet")
    assert rc == 2 and "key 'probe_label': 'nope'" in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "config.json").exists()


def test_the_probe_subset_and_the_knn_probe():
    from morphoscale.train.probes import knn_accuracy, probe_subset

    sites = pd.DataFrame(
        {"perturbation": ["ctrl"] * 40 + [f"g{i // 8}" for i in range(80)], "is_control": [True] * 40 + [False] * 80}
    )
    rows = probe_subset(sites, 48, seed=0)
    chosen = sites.iloc[rows]
    assert chosen["is_control"].sum() == 24 and len(chosen) == 48
    assert (chosen[~chosen.is_control].groupby("perturbation").size() == 8).all()  # whole perturbations
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    centres = rng.normal(size=(4, 16)) * 5
    X = centres[labels] + rng.normal(size=(40, 16))
    wells = np.arange(40) // 2  # two sites per well; a site never votes for its own well
    acc, chance = knn_accuracy(X, labels, wells)
    assert acc == 1.0 and chance == pytest.approx(0.25)
    acc_noise, _ = knn_accuracy(rng.normal(size=(40, 16)), labels, wells)
    assert acc_noise < 0.6


def test_the_banded_blur_is_the_zero_padded_gaussian_convolution():
    import math

    import torch.nn.functional as F

    from morphoscale.models.masked import gaussian_band

    sigma, r = 2.5, math.ceil(3 * 2.5)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    k = k / k.sum()
    x = torch.randn(2, 3, 40, 24, dtype=torch.float64)
    conv = F.conv2d(
        F.conv2d(x.reshape(6, 1, 40, 24), k.view(1, 1, 1, -1), padding=(0, r)), k.view(1, 1, -1, 1), padding=(r, 0)
    ).reshape(2, 3, 40, 24)
    banded = gaussian_band(40, sigma, dtype=torch.float64).T @ (x @ gaussian_band(24, sigma, dtype=torch.float64))
    torch.testing.assert_close(banded, conv, rtol=1e-12, atol=1e-12)


def test_under_norm_pix_loss_the_interpolation_floor_compares_standardized_patches():
    """A smooth image under norm_pix_loss: the floor is the interpolation standardized per patch and
    shrunk by its least-squares factor, which beats predicting zero; the raw-intensity guess
    against the standardized target (the floor before) does not, nor does the unshrunk one."""
    from morphoscale.models.losses import standardize_patches

    torch.manual_seed(0)
    m = TrainingModule(
        "mae_vit_tiny_patch8_64",
        CH[:3],
        model_overrides={"norm_pix_loss": True, "depth": 1, "decoder_depth": 1, "fourier_weight": 0.0},
    )
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    imgs = (3 * torch.sin(xx / 5 + yy / 7)).expand(2, 3, 32, 32).contiguous()
    losses, _ = m({"image": imgs}, generator=torch.Generator().manual_seed(1))
    model = m.model
    _, _, mask = model(imgs, generator=torch.Generator().manual_seed(1))
    hidden = pixel_mask(model, mask, imgs.shape).to(imgs.dtype)
    raw = model.patchify(interpolate_visible(imgs, hidden, sigma=4.0))
    g, t, h = standardize_patches(raw), standardize_patches(model.patchify(imgs)), mask.bool()
    rho = float((g * t)[h].sum() / (g * g)[h].sum())
    fair = model.forward_loss(imgs, rho * g, mask)["loss"]
    assert float(losses["interpolation"]) == pytest.approx(float(fair), rel=1e-5)
    assert float(losses["interpolation"]) < float(losses["trivial"])
    for worse in (raw, g):
        assert float(model.forward_loss(imgs, worse, mask)["loss"]) > float(losses["trivial"])
