"""Pretrained weights from disk: state dicts built in each layout (the reference's names and
shapes, trained-like random values: LayerScale about 0.5, every bias non-zero, mlp_bias
included), loaded by `load_pretrained`, and our embeddings against the reference's forward
written out from first principles: timm 1.0.11's ParallelScalingBlock (the fused projection's
bias laid out as [zeros for q, k, v, then mlp_bias] over outputs split [mlp, q, k, v]), and
its predict's input normalization (pixels / 255, InstanceNorm with eps 1e-5). The check
against the reference's own code, under its own timm, is benchmarks/openphenom_reference.py."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import assert_one_line_error, run_cli
from safetensors.torch import save_file
from timm.models.vision_transformer import ParallelScalingBlock, VisionTransformer

from morphoscale.train.checkpoint import load_pretrained


def reference_sincos(dim: int, length: int, n_modality: int) -> torch.Tensor:
    """maes_microscopy's table, written from its definition: [sin h, cos h, sin w, cos w] per
    patch, repeated per modality, a zero row for the class token first."""
    lin = torch.arange(length, dtype=torch.float32)
    hm, wm = torch.meshgrid(lin, lin, indexing="ij")
    pd_ = dim // 4
    w = 1.0 / (10000.0 ** (torch.arange(pd_, dtype=torch.float32) / pd_))
    hw, ww = torch.outer(hm.flatten(), w), torch.outer(wm.flatten(), w)
    table = torch.cat([torch.sin(hw), torch.cos(hw), torch.sin(ww), torch.cos(ww)], dim=1)[None].repeat(
        1, n_modality, 1
    )
    return torch.cat([torch.zeros(1, 1, dim), table], dim=1)


def reference_backbone(img: int, patch: int, dim: int, depth: int, max_in_chans: int) -> VisionTransformer:
    """The reference's vit_small_patch16_256 recipe (ParallelScalingBlock, no qkv bias, qk-norm,
    LayerScale, global_pool avg) at a small size, made channel-agnostic as its code does, with
    weights at a trained-like scale (timm's init would leave LayerScale at 1e-4 and mlp_bias at 0,
    which hides the bias routing)."""
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=img,
        patch_size=patch,
        in_chans=1,
        embed_dim=dim,
        depth=depth,
        num_heads=dim // 64,
        num_classes=0,
        fc_norm=None,
        class_token=True,
        global_pool="avg",
        init_values=1e-4,
        block_fn=ParallelScalingBlock,
        qkv_bias=False,
        qk_norm=True,
    )
    vit.pos_embed = torch.nn.Parameter(reference_sincos(dim, img // patch, max_in_chans), requires_grad=False)
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if name == "pos_embed":
                continue
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.05 * torch.randn_like(p))
            elif p.ndim > 1:
                p.copy_(torch.randn_like(p) * p.shape[-1] ** -0.5)
            else:  # biases (mlp_bias too) and the norms' shifts at std 0.05, the norms' scales about 1
                p.copy_(torch.randn_like(p) * 0.05 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return vit.eval()


def legacy_block(blk, x: torch.Tensor) -> torch.Tensor:
    """timm 1.0.11's ParallelScalingBlock.forward, every step by hand: one projection with the
    bias [0 (3 x dim), mlp_bias], split [mlp, q, k, v]; softmax attention with LayerNorm'd q and
    k; GELU MLP; the two output projections summed and scaled by LayerScale."""
    B, N, D = x.shape
    H = blk.mlp_bias.shape[0]
    h = blk.num_heads
    y = F.layer_norm(x, (D,), blk.in_norm.weight, blk.in_norm.bias, blk.in_norm.eps)
    bias = torch.cat([torch.zeros(3 * D), blk.mlp_bias])  # laid out for [q, k, v, mlp] ...
    y = y @ blk.in_proj.weight.T + bias  # ... added to outputs ordered [mlp, q, k, v]
    x_mlp, q, k, v = y[..., :H], y[..., H : H + D], y[..., H + D : H + 2 * D], y[..., H + 2 * D :]

    def heads(t, norm=None):
        t = t.reshape(B, N, h, D // h)
        if norm is not None:
            t = F.layer_norm(t, (D // h,), norm.weight, norm.bias, norm.eps)
        return t.transpose(1, 2)

    q, k, v = heads(q, blk.q_norm), heads(k, blk.k_norm), heads(v)
    attn = torch.softmax(q @ k.transpose(-2, -1) * (D // h) ** -0.5, dim=-1)
    x_attn = (attn @ v).transpose(1, 2).reshape(B, N, D) @ blk.attn_out_proj.weight.T + blk.attn_out_proj.bias
    x_mlp = F.gelu(x_mlp) @ blk.mlp_out_proj.weight.T + blk.mlp_out_proj.bias
    return x + blk.ls.gamma * (x_attn + x_mlp)


def reference_input(pixels: torch.Tensor) -> torch.Tensor:
    """The reference's input_norm: pixels / 255, then InstanceNorm2d(affine=False): per image
    and channel, biased variance, eps 1e-5 inside the square root."""
    x = pixels.float() / 255.0
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(-2, -1), keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def reference_embedding(vit: VisionTransformer, imgs: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """The reference's predict on normalized crops: per-channel projection stacked channel-major,
    cls, the table sliced to the tokens, the legacy blocks (up to `layer`), mean of patch tokens."""
    x = torch.stack([vit.patch_embed.proj(imgs[:, i : i + 1]) for i in range(imgs.shape[1])], dim=2)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + vit.pos_embed[:, : x.shape[1]]
    for blk in vit.blocks[: (layer % len(vit.blocks)) + 1]:
        x = legacy_block(blk, x)
    return x[:, 1:].mean(dim=1)


def openphenom_file(tmp_path, vit: VisionTransformer, max_in_chans: int, fmt: str):
    sd = {f"encoder.vit_backbone.{k}": v.clone() for k, v in vit.state_dict().items()}
    sd.update(
        {
            "decoder.mask_token": torch.zeros(1, 1, 32),
            "decoder.decoders.0.0.attn.qkv.weight": torch.zeros(96, 32),
            "encoder_decoder_proj.weight": torch.zeros(32, vit.embed_dim),
            "decoder_pred.weight": torch.zeros(64, 32),
        }
    )
    folder = tmp_path / fmt
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"encoder": {"max_in_chans": max_in_chans, "channel_agnostic": True}})
    )
    path = folder / "model.safetensors"  # the released name, whatever the format inside
    if fmt == "torch":
        torch.save({"state_dict": sd}, path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_openphenom_layout_embeds_as_the_reference_forward(tmp_path, fmt):
    vit = reference_backbone(img=32, patch=8, dim=128, depth=2, max_in_chans=11)
    path = openphenom_file(tmp_path, vit, 11, fmt)
    model = load_pretrained(path, ["DNA", "ER", "RNA", "AGP", "Mito"])
    assert model.weights_source["layout"] == "openphenom" and model.cfg.img_size == 32 and model.cfg.num_heads == 2
    assert model.weights_source["mlp_bias"] == "legacy" and model.input_norm.kind == "instance"
    pixels = torch.randint(0, 256, (3, 5, 32, 32), dtype=torch.uint8)
    pixels[0, 1] = pixels[0, 1] // 64  # a dim channel, where eps and the units matter
    imgs = model.input_norm(pixels)
    torch.testing.assert_close(imgs, reference_input(pixels), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        ours, ref = model.embed(imgs), reference_embedding(vit, reference_input(pixels))
        assert ours.shape == (3, 128)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.embed(imgs, layer=0), reference_embedding(vit, imgs, layer=0))
        # channel-agnostic without channel embeddings: the channels' order does not matter, their number may change
        torch.testing.assert_close(model.embed(imgs[:, [4, 2, 0, 1, 3]]), ours, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            model.embed(imgs[:, :3]), reference_embedding(vit, imgs[:, :3]), rtol=1e-5, atol=1e-5
        )
        per = model.embed(imgs, pooling="per_channel")
        assert per.shape == (3, 5 * 128)
        torch.testing.assert_close(per.reshape(3, 5, 128).mean(dim=1), ours, rtol=1e-5, atol=1e-5)


def test_the_bias_routing_is_what_separates_the_two_timm_eras(tmp_path):
    """The fixed routing is the pinned timm's own block; it differs from the legacy one by
    where mlp_bias lands, so with mlp_bias zero the two agree and with it non-zero they do not."""
    vit = reference_backbone(img=32, patch=8, dim=128, depth=2, max_in_chans=11)
    path = openphenom_file(tmp_path, vit, 11, "torch")
    legacy = load_pretrained(path, ["a", "b"])
    fixed = load_pretrained(path, ["a", "b"], mlp_bias="fixed")
    assert fixed.weights_source["mlp_bias"] == "fixed"
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        tokens = fixed.tokens(x)
        torch.testing.assert_close(fixed.vit.blocks[0](tokens), vit.blocks[0](tokens))  # timm 1.0.31's forward
        torch.testing.assert_close(legacy.vit.blocks[0](tokens), legacy_block(vit.blocks[0], tokens))
        gap = (legacy.embed(x) - fixed.embed(x)).abs().max()
        assert gap > 1e-2, gap
        for m in (legacy, fixed):
            for blk in m.vit.blocks:
                blk.mlp_bias.zero_()
        torch.testing.assert_close(legacy.embed(x), fixed.embed(x), rtol=1e-5, atol=1e-5)


def test_input_norms_as_each_code_prepares_pixels():
    from morphoscale.data.transforms import InputNorm, self_standardize

    pixels = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    pixels[1, 2] = 7  # a flat channel
    inst = InputNorm("instance", eps=1e-5).for_dtype(np.uint8)
    torch.testing.assert_close(inst(pixels), reference_input(pixels))
    torch.testing.assert_close(inst(pixels[0]), reference_input(pixels[0]))
    assert inst(pixels)[1, 2].abs().max() < 1e-5  # a flat channel is zero, up to the kernel's rounding
    # uint16: the same image at 16 bits (x 257) is read as its 8-bit self, eps weighing the same
    wide = InputNorm("instance", eps=1e-5).for_dtype(np.uint16)
    torch.testing.assert_close(wide(pixels.to(torch.int32) * 257), inst(pixels), rtol=1e-5, atol=1e-5)
    ms = InputNorm("mean_std", mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 1.0)).for_dtype(np.uint8)
    expect = (pixels.float() / 255 - torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)) / torch.tensor([0.5, 0.25, 1.0]).view(
        3, 1, 1
    )
    torch.testing.assert_close(ms(pixels), expect)
    assert torch.equal(InputNorm().for_dtype(np.uint16)(pixels), self_standardize(pixels))


def test_timm_layout_embeds_as_timm(tmp_path):
    import timm

    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, in_chans=3, img_size=32).eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    model = load_pretrained(tmp_path / "vit.safetensors", ["DNA", "ER", "Mito"], arch="vit_tiny_patch16_224")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model.embed(x), net.forward_features(x)[:, net.num_prefix_tokens :].mean(dim=1), rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(model.embed(x, pooling="cls"), net.forward_features(x)[:, 0], rtol=1e-5, atol=1e-5)


def test_timm_weights_take_their_own_mean_and_std(tmp_path, capsys, sim_store):
    import timm

    from morphoscale.errors import InputError

    net = timm.create_model("vit_tiny_patch16_224", num_classes=0, in_chans=3, img_size=32)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model = load_pretrained(path, ["DNA", "ER", "Mito"], arch="vit_tiny_patch16_224")
    timm_cfg = timm.data.resolve_model_data_config(net)  # the architecture's default tag (augreg: 0.5, 0.5)
    assert model.input_norm.kind == "mean_std"
    assert model.input_norm.mean == tuple(timm_cfg["mean"]) and model.input_norm.std == tuple(timm_cfg["std"])
    given = load_pretrained(path, ["DNA", "ER", "Mito"], arch="vit_tiny_patch16_224", mean=[0.2], std=[0.1])
    assert given.input_norm.mean == (0.2, 0.2, 0.2) and given.input_norm.std == (0.1, 0.1, 0.1)
    # a Hub folder's config.json names the architecture and its pretrained_cfg the mean and std
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "architecture": "vit_tiny_patch16_224",
                "pretrained_cfg": {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4]},
            }
        )
    )
    hub = load_pretrained(path, ["DNA", "ER", "Mito"])
    assert hub.preset == "timm:vit_tiny_patch16_224" and hub.input_norm.mean == (0.4, 0.5, 0.6)
    assert load_pretrained(path, ["DNA", "ER", "Mito"], input_norm="self").input_norm.kind == "self"
    for kwargs, match in (
        ({"mean": [0.1, 0.2], "std": [0.1, 0.2]}, "2 means and 2 stds for 3 channels"),
        ({"mean": [0.1]}, "give both"),
        ({"mean": [0.1], "std": [0.0]}, "every std must be positive"),
        ({"mean": [0.1], "std": [0.1], "input_norm": "instance"}, "used only by --input-norm mean_std"),
        ({"mlp_bias": "legacy"}, "has no ParallelScalingBlock"),
    ):
        with pytest.raises(InputError, match=match):
            load_pretrained(path, ["DNA", "ER", "Mito"], **kwargs)
    # through the verb: pixels / 255, then the config's mean and std, recorded in the provenance
    store_channels = ["DNA", "ER", "Mito"]
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--weights",
        path,
        *[a for c in store_channels for a in ("--channels", c)],
        "--store",
        sim_store,
        "--out",
        tmp_path / "t.h5ad",
        "--level",
        "site",
        "--quiet",
    )
    assert rc == 0, err
    e = ad.read_h5ad(tmp_path / "t.h5ad")
    assert json.loads(e.uns["provenance"]["weights"])["input_norm"]["mean"] == [0.4, 0.5, 0.6]


def test_reading_options_belong_to_pretrained_weights(tmp_path, capsys, trained, sim_store):
    _, trained = trained
    for flag, value, says in (
        ("--mlp-bias", "legacy", "--mlp-bias: only with --weights"),
        ("--input-norm", "instance", "--input-norm: only with --weights"),
        ("--mlp-bias", "old", "--mlp-bias: 'old' is not one of"),
        ("--input-norm", "z", "--input-norm: 'z' is not one of"),
    ):
        rc, _, err = run_cli(
            capsys, "embed", "--checkpoint", trained, "--store", sim_store, "--out", tmp_path / "x.h5ad", flag, value
        )
        assert_one_line_error(rc, err, says)
        assert not (tmp_path / "x.h5ad").exists()
    with pytest.raises(Exception, match="trained on self-standardized crops"):
        load_pretrained(trained, [], input_norm="instance")


def test_weights_that_do_not_fit_name_the_first_key(tmp_path):
    from morphoscale.errors import InputError

    vit = reference_backbone(img=32, patch=8, dim=64, depth=1, max_in_chans=11)
    path = openphenom_file(tmp_path, vit, 11, "torch")
    with open(path, "rb") as f:
        sd = torch.load(f, weights_only=True)["state_dict"]
    sd["encoder.vit_backbone.blocks.0.in_proj.weight"] = torch.zeros(5, 64)
    torch.save({"state_dict": sd}, tmp_path / "bad.pt")
    (tmp_path / "config.json").write_text(json.dumps({"encoder": {"max_in_chans": 11}}))
    with pytest.raises(InputError, match=r"'encoder.vit_backbone.blocks.0.in_proj.weight' has shape \(5, 64\)"):
        load_pretrained(tmp_path / "bad.pt", ["DNA"])
    sd["encoder.vit_backbone.pos_embed"] = torch.randn_like(sd["encoder.vit_backbone.pos_embed"])
    torch.save({"state_dict": sd}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="not OpenPhenom's fixed sin-cos table"):
        load_pretrained(tmp_path / "bad.pt", ["DNA"])
    (tmp_path / "junk.bin").write_bytes(b"not weights at all")
    with pytest.raises(InputError, match="tried safetensors .* and torch.load"):
        load_pretrained(tmp_path / "junk.bin", ["DNA"])
    with pytest.raises(InputError, match="--arch"):
        import timm

        save_file(
            timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32).state_dict(),
            str(tmp_path / "t.safetensors"),
        )
        load_pretrained(tmp_path / "t.safetensors", ["a", "b", "c"])


def test_embed_a_store_with_openphenom_weights_through_the_cli(tmp_path, capsys, sim_store):
    vit = reference_backbone(img=32, patch=8, dim=64, depth=1, max_in_chans=11)
    path = openphenom_file(tmp_path, vit, 11, "torch")
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--weights",
        path,
        "--store",
        sim_store,
        "--out",
        tmp_path / "e.h5ad",
        "--level",
        "site",
        "--quiet",
    )
    assert rc == 0, err
    e = ad.read_h5ad(tmp_path / "e.h5ad")
    assert (
        e.n_vars == 64
        and np.isfinite(e.X).all()
        and json.loads(e.uns["provenance"]["weights"])["layout"] == "openphenom"
    )
    # the verb's site embedding is the reference's predict on the store's uint8 tiles, averaged
    from morphoscale.data.store import ImageStore

    store = ImageStore(sim_store)
    assert store.dtype == np.uint8
    pixels = torch.from_numpy(np.stack([store.read(i) for i in range(3)]))  # (3, C, 64, 64)
    tiles = torch.stack([pixels[:, :, y : y + 32, x : x + 32] for y in (0, 32) for x in (0, 32)], dim=1)
    with torch.no_grad():
        ref = reference_embedding(vit, reference_input(tiles.reshape(12, -1, 32, 32))).reshape(3, 4, -1).mean(dim=1)
    np.testing.assert_allclose(e.X[:3], ref.numpy(), rtol=1e-4, atol=1e-5)
    rc, _, err = run_cli(capsys, "embed", "--store", sim_store, "--out", tmp_path / "f.h5ad")
    assert_one_line_error(rc, err, "give --checkpoint")


def test_a_run_with_a_pretrained_encoder(tmp_path, capsys):
    vit = reference_backbone(img=32, patch=8, dim=64, depth=1, max_in_chans=11)
    path = openphenom_file(tmp_path, vit, 11, "torch")
    (tmp_path / "run.yaml").write_text(
        f"data: {{simulate: {{preset: tiny}}}}\nencoders: [{{name: op, kind: pretrained, weights: {path}, embed: {{level: well}}}}]\n"
        "bench: {quick: true}\n"
    )
    rc, _, err = run_cli(capsys, "run", tmp_path / "run.yaml", "--out", tmp_path / "r", "--quiet")
    assert rc == 0, err
    s = json.loads((tmp_path / "r" / "encoders" / "op" / "bench" / "summary.json").read_text())
    assert "recall" in s and s["metrics"] == ["recall", "complexes", "compound_gene", "consistency", "truth_cosine"]
    assert (tmp_path / "r" / "report.html").exists()
    (tmp_path / "bad.yaml").write_text("data: {simulate: {preset: tiny}}\nencoders: [{name: op, kind: pretrained}]\n")
    rc, _, err = run_cli(capsys, "run", tmp_path / "bad.yaml", "--out", tmp_path / "r2")
    assert_one_line_error(rc, err, "kind pretrained needs weights")
    (tmp_path / "bad.yaml").write_text(
        "data: {simulate: {preset: tiny}}\nencoders: [{name: op, kind: pretrained, weights: nope.pt}]\n"
    )
    rc, _, err = run_cli(capsys, "run", tmp_path / "bad.yaml", "--out", tmp_path / "r2")
    assert_one_line_error(rc, err, "key 'encoders.0.weights': nope.pt not found")


def test_our_own_checkpoint_as_weights_and_as_trainings_start(sim_store, tmp_path, capsys):
    (tmp_path / "ri.yaml").write_text(
        "model: mae_vit_tiny_patch8_64\nmodel_overrides: {depth: 1}\nseed: 3\nrandom_init: true\n"
    )
    rc, _, err = run_cli(
        capsys, "train", "--store", sim_store, "--out", tmp_path / "ri", "--config", tmp_path / "ri.yaml", "--quiet"
    )
    assert rc == 0, err
    ckpt = tmp_path / "ri" / "model.ckpt"
    model = load_pretrained(ckpt, [])  # the layout read from the keys: ours
    assert model.preset == "mae_vit_tiny_patch8_64"
    for args, name in ((["--checkpoint", ckpt], "a.h5ad"), (["--weights", ckpt], "b.h5ad")):
        rc, _, err = run_cli(
            capsys, "embed", *args, "--store", sim_store, "--out", tmp_path / name, "--level", "site", "--quiet"
        )
        assert rc == 0, err
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "a.h5ad").X, ad.read_h5ad(tmp_path / "b.h5ad").X)
    # training starts from those weights: with lr 0 it ends where it started (a different seed would not)
    (tmp_path / "ft.yaml").write_text(
        f"model: mae_vit_tiny_patch8_64\nmodel_overrides: {{depth: 1}}\nweights: {ckpt}\nlr: 0\nmax_steps: "
        "1\nwarmup_steps: 0\nbatch_size: 2\n"
    )
    rc, _, err = run_cli(
        capsys, "train", "--store", sim_store, "--out", tmp_path / "ft", "--config", tmp_path / "ft.yaml", "--quiet"
    )
    assert rc == 0, err
    a, b = load_pretrained(ckpt, []).state_dict(), load_pretrained(tmp_path / "ft" / "model.ckpt", []).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    vit = reference_backbone(img=32, patch=8, dim=64, depth=1, max_in_chans=11)
    (tmp_path / "bad.yaml").write_text(
        f"model: mae_vit_tiny_patch8_64\nweights: {openphenom_file(tmp_path, vit, 11, 'torch')}\nmax_steps: 1\n"
    )
    rc, _, err = run_cli(
        capsys, "train", "--store", sim_store, "--out", tmp_path / "bad", "--config", tmp_path / "bad.yaml", "--quiet"
    )
    assert_one_line_error(rc, err, "key 'weights'", "openphenom weights")
