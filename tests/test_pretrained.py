"""Pretrained weights from disk: state dicts built in each layout (the reference's names and
shapes, random values), loaded by `load_pretrained`, and our embeddings against a direct
re-implementation of the reference forward pass on the same input."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch
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
    LayerScale, global_pool avg) at a small size, made channel-agnostic as its code does."""
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
    with torch.no_grad():  # random values everywhere (LayerScale, norms and biases included), not the init's
        for name, p in vit.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn_like(p) * (0.5 if p.ndim > 1 else 0.2) + (1.0 if name.endswith("gamma") else 0.0))
    return vit.eval()


def reference_embedding(vit: VisionTransformer, imgs: torch.Tensor) -> torch.Tensor:
    """The reference's predict: per-channel projection stacked channel-major, cls, the table sliced
    to the tokens, norm_pre, blocks, norm (Identity under global_pool avg), mean of patch tokens."""
    x = torch.stack([vit.patch_embed.proj(imgs[:, i : i + 1]) for i in range(imgs.shape[1])], dim=2)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + vit.pos_embed[:, : x.shape[1]]
    x = vit.norm(vit.blocks(vit.norm_pre(x)))
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
    imgs = torch.randn(3, 5, 32, 32)
    with torch.no_grad():
        ours, ref = model.embed(imgs), reference_embedding(vit, imgs)
        assert ours.shape == (3, 128)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        # channel-agnostic without channel embeddings: the channels' order does not matter, their number may change
        torch.testing.assert_close(model.embed(imgs[:, [4, 2, 0, 1, 3]]), ours, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            model.embed(imgs[:, :3]), reference_embedding(vit, imgs[:, :3]), rtol=1e-5, atol=1e-5
        )
        per = model.embed(imgs, pooling="per_channel")
        assert per.shape == (3, 5 * 128)
        torch.testing.assert_close(per.reshape(3, 5, 128).mean(dim=1), ours, rtol=1e-5, atol=1e-5)


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
