"""Masked autoencoders: geometry, masking, loss, presets, training and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from morphoscale.models.losses import fourier_l1, mae_loss
from morphoscale.models.mae_vit import MAEConfig, MAEViT
from morphoscale.models.registry import PRESETS, create_model, encoder_parameters

CH6 = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]


def small_mae(**kw):
    cfg = dict(
        img_size=32,
        patch_size=8,
        in_chans=3,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    cfg.update(kw)
    return MAEViT(MAEConfig(**cfg))


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 48, 24)])
def test_patchify_and_unpatchify_are_inverses(shape):
    m = small_mae()
    x = torch.randn(*shape)
    grid = (shape[2] // 8, shape[3] // 8)
    assert torch.equal(m.unpatchify(m.patchify(x), grid), x)
    ca = create_model("ca_mae_vit_tiny_patch8_64", CH6[:3])
    assert torch.equal(ca.unpatchify(ca.patchify(x), grid, 3), x)
    # a patch holds exactly its pixels
    assert torch.equal(m.patchify(x)[0, 1].reshape(8, 8, 3), x[0, :, 0:8, 8:16].permute(1, 2, 0))


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 0.95), st.integers(1, 6), st.integers(1, 6), st.integers(0, 1000))
def test_the_mask_hides_exactly_round_ratio_tokens_per_image(ratio, gh, gw, seed):
    m = small_mae()
    L = gh * gw
    x = torch.randn(3, L, 4)
    kept, mask, ids_restore = m.random_masking(x, ratio, torch.Generator().manual_seed(seed))
    assert (mask.sum(1) == round(ratio * L)).all()
    assert kept.shape[1] == L - round(ratio * L)
    # the kept tokens are exactly the unmasked ones, in shuffled order
    for i in range(3):
        vis = x[i][mask[i] == 0]
        assert torch.equal(torch.sort(kept[i].sum(1)).values, torch.sort(vis.sum(1)).values)


def test_loss_ignores_visible_patches():
    m = small_mae()
    imgs = torch.randn(2, 3, 32, 32)
    losses, pred, mask = m(imgs, generator=torch.Generator().manual_seed(0))
    changed = imgs.clone()
    pix = mask.reshape(2, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)
    changed = torch.where(pix.bool().expand_as(changed), changed, torch.randn_like(changed) * 100)
    again = m.forward_loss(changed, pred, mask)
    for k in losses:
        assert torch.allclose(losses[k], again[k])
    # and it does depend on the masked ones
    moved = torch.where(pix.bool().expand_as(imgs), imgs + 1, imgs)
    assert not torch.allclose(losses["mse"], m.forward_loss(moved, pred, mask)["mse"])


def test_fourier_term_matches_numpy():
    rng = np.random.default_rng(0)
    N, L, p, C = 2, 5, 4, 3
    pred, target = rng.normal(size=(N, L, p * p * C)), rng.normal(size=(N, L, p * p * C))
    got = fourier_l1(torch.tensor(pred), torch.tensor(target), p, C).numpy()
    expected = np.zeros((N, L))
    for n in range(N):
        for l in range(L):
            a, b = pred[n, l].reshape(p, p, C), target[n, l].reshape(p, p, C)
            expected[n, l] = np.mean(
                [np.abs(np.abs(np.fft.fft2(a[..., c])) - np.abs(np.fft.fft2(b[..., c]))).mean() for c in range(C)]
            )
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    mask = torch.tensor(rng.random((N, L)) < 0.5, dtype=torch.float32)
    mask[0, 0] = 1
    out = mae_loss(torch.tensor(pred, dtype=torch.float32), torch.tensor(target, dtype=torch.float32), mask, p, C, 0.01)
    mse = ((pred - target) ** 2).mean(-1)
    m = mask.numpy()
    exp_loss = 0.99 * (mse * m).sum() / m.sum() + 0.01 * (expected * m).sum() / m.sum()
    assert out["loss"].item() == pytest.approx(exp_loss, rel=1e-5)


@pytest.mark.parametrize(
    "name,millions",
    [
        ("mae_vit_small_patch16_256", 22),
        ("mae_vit_base_patch16_256", 86),
        ("mae_vit_large_patch16_256", 304),
        ("mae_vit_base_patch8_256", 86),
        ("ca_mae_vit_small_patch16_256", 22),
    ],
)
def test_encoder_sizes_are_the_known_vit_sizes(name, millions):
    with torch.device("meta"):
        model = create_model(name, CH6)
    assert abs(encoder_parameters(model) / 1e6 - millions) / millions < 0.05


def test_every_named_preset_exists():
    for n in [
        "mae_vit_tiny_patch8_64",
        "mae_vit_tiny_patch16_128",
        "mae_vit_small_patch16_256",
        "mae_vit_base_patch16_256",
        "mae_vit_base_patch8_256",
        "mae_vit_large_patch16_256",
        "mae_vit_large_patch8_256",
        "ca_mae_vit_tiny_patch8_64",
        "ca_mae_vit_small_patch16_256",
        "mu_net_small",
        "mu_net_medium",
        "mu_net_large",
    ]:
        assert n in PRESETS
    assert (
        PRESETS["mae_vit_small_patch16_256"].decoder_embed_dim == 512
        and PRESETS["mae_vit_small_patch16_256"].decoder_depth == 8
    )
    assert (
        PRESETS["mae_vit_small_patch16_256"].mask_ratio == 0.75
        and PRESETS["mae_vit_small_patch16_256"].fourier_weight == 0.01
    )


def test_any_crop_size_and_embedding_layers():
    m = create_model("mae_vit_tiny_patch8_64", CH6)
    for hw in ((64, 64), (96, 80)):
        losses, pred, mask = m(torch.randn(1, 6, *hw))
        assert pred.shape[1] == (hw[0] // 8) * (hw[1] // 8)
    x = torch.randn(2, 6, 64, 64)
    assert m.embed(x).shape == (2, 192) and m.embed(x, layer=5, pooling="cls").shape == (2, 192)
    assert not torch.allclose(m.embed(x, layer=5), m.embed(x))


def test_channel_agnostic_mae_embeds_any_subset_and_rejects_unknown_channels():
    m = create_model("ca_mae_vit_tiny_patch8_64", CH6)
    x = torch.randn(2, 6, 64, 64)
    full = m.embed(x, pooling="per_channel")
    assert full.shape == (2, 6 * 192)
    five = m.embed(x[:, :5], channel_ids=m.channel_ids(CH6[:5]))
    assert five.shape == (2, 192)
    swapped = m.embed(x[:, [1, 0]], channel_ids=m.channel_ids(["ER", "DNA"]), pooling="per_channel")
    same = m.embed(x[:, [0, 1]], channel_ids=m.channel_ids(["DNA", "ER"]), pooling="per_channel")
    torch.testing.assert_close(swapped, torch.cat([same[:, 192:], same[:, :192]], 1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="GFP unknown to the model"):
        m.channel_ids(["DNA", "GFP"])
    losses, pred, mask = m(x[:, :4], channel_ids=m.channel_ids(CH6[:4]))
    assert (mask.sum(1) == round(0.75 * 4 * 64)).all()


def test_mu_net_masks_exactly_and_embeds_the_bottleneck():
    m = create_model("mu_net_small", CH6)
    x = torch.randn(2, 6, 64, 64)
    losses, pred, mask = m(x)
    assert (mask.sum(1) == 48).all() and torch.isfinite(losses["loss"])
    assert m.embed(x).shape == (2, m.embed_dim)


def _jump_crops(examples_dir, n=16, size=64, seed=0):
    import tifffile

    from morphoscale.data.examples import JUMP_FIELD_FILES
    from morphoscale.data.transforms import self_standardize

    field = np.stack(
        [tifffile.imread(examples_dir / "jump-pilot-field" / f) for f in JUMP_FIELD_FILES.values()]
    ).astype(np.float32)
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        y, x = rng.integers(0, 1080 - size, 2)
        crops.append(field[:, y : y + size, x : x + size])
    return self_standardize(torch.tensor(np.stack(crops)))


def test_tiny_mae_learns_real_jump_crops(examples_dir):
    torch.manual_seed(0)
    imgs = _jump_crops(examples_dir)
    model = create_model("mae_vit_tiny_patch8_64", ["DNA", "ER", "RNA", "AGP", "Mito"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    def masked_loss():
        with torch.no_grad():
            return model(imgs, generator=torch.Generator().manual_seed(123))[0]["mse"].item()

    before = masked_loss()
    for step in range(200):
        loss = model(imgs, generator=torch.Generator().manual_seed(step))[0]["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = masked_loss()
    assert after < 0.7 * before, (before, after)


def _weights(path):
    from morphoscale.train.checkpoint import load_module

    return {k: v.clone() for k, v in load_module(path).model.state_dict().items()}


def test_resume_from_step_k_gives_the_same_weights(sim_store, tmp_path):
    from morphoscale.train.fit import TrainConfig, train

    cfg = TrainConfig(
        model="mae_vit_tiny_patch8_64",
        model_overrides={"depth": 2, "drop_path": 0.1},
        batch_size=4,
        max_steps=12,
        warmup_steps=3,
        checkpoint_every=5,
        preview_every=6,
        augment="random",
        lr=1e-3,
    )
    full = train(cfg, sim_store, tmp_path / "full", progress=False)
    resumed = train(
        cfg,
        sim_store,
        tmp_path / "resumed",
        resume_from=tmp_path / "full" / "checkpoints" / "step0000005.ckpt",
        progress=False,
    )
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    first = _weights(tmp_path / "full" / "checkpoints" / "step0000005.ckpt")
    assert any(not torch.allclose(first[k], a[k]) for k in a)  # it did train on
    assert (tmp_path / "full" / "previews" / "step0000006.png").exists()
    assert (tmp_path / "full" / "logs" / "metrics.csv").exists()


def test_train_cli_errors(sim_store, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "train", "--store", sim_store, "--out", tmp_path / "r", "--model", "mae_vit_huge")
    assert_one_line_error(rc, err, "key 'model': unknown preset 'mae_vit_huge'")
    (tmp_path / "bad.yaml").write_text("model: mae_vit_tiny_patch8_64\nlearning_rate: 0.1\n")
    rc, _, err = run_cli(
        capsys, "train", "--store", sim_store, "--out", tmp_path / "r", "--config", tmp_path / "bad.yaml"
    )
    assert_one_line_error(rc, err, "bad.yaml: key 'learning_rate': unknown key")
    (tmp_path / "big.yaml").write_text("model: mae_vit_tiny_patch16_128\n")
    rc, _, err = run_cli(
        capsys, "train", "--store", sim_store, "--out", tmp_path / "r", "--config", tmp_path / "big.yaml"
    )
    assert_one_line_error(rc, err, "key 'crop_size': 128 does not fit the store's 64x64 images")
    (tmp_path / "ch.yaml").write_text("channels: [DNA, GFP]\n")
    rc, _, err = run_cli(
        capsys, "train", "--store", sim_store, "--out", tmp_path / "r", "--config", tmp_path / "ch.yaml"
    )
    assert_one_line_error(rc, err, "unknown channel(s) GFP")
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "x").write_text("x")
    rc, _, err = run_cli(capsys, "train", "--store", sim_store, "--out", tmp_path / "r2")
    assert_one_line_error(rc, err, "r2: output exists; pass --resume")
    rc, _, err = run_cli(capsys, "train", "--store", sim_store, "--out", tmp_path / "r3", "--resume")
    assert_one_line_error(rc, err, "nothing to resume")


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(sim_store, tmp_path, capsys, monkeypatch):
    from morphoscale.train.module import TrainingModule

    real = TrainingModule.forward

    def poisoned(self, batch, generator=None):
        losses, preview = real(self, batch, generator)
        if self.global_step >= 4:
            losses = {k: v * float("nan") for k, v in losses.items()}
        return losses, preview

    monkeypatch.setattr(TrainingModule, "forward", poisoned)
    (tmp_path / "c.yaml").write_text(
        "model_overrides: {depth: 1}\nbatch_size: 2\nmax_steps: 10\ncheckpoint_every: 2\nwarmup_steps: 1\n"
    )
    rc, _, err = run_cli(
        capsys, "train", "--store", sim_store, "--out", tmp_path / "run", "--config", tmp_path / "c.yaml", "--quiet"
    )
    assert_one_line_error(rc, err, "non-finite loss or gradient at step 4", "checkpoints")
    good = _weights(tmp_path / "run" / "checkpoints" / "step0000004.ckpt")
    assert all(torch.isfinite(v).all() for v in good.values() if v.is_floating_point())
    assert not (tmp_path / "run" / "model.ckpt").exists()
