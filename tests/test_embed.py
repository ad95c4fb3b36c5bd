"""Embedding: tiles to sites to wells, resume, channel checks, bounded memory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from fixtures import rxrx_rows, write_rxrx_screen

from morphoscale.data.datasets import TileDataset
from morphoscale.data.store import ImageStore
from morphoscale.train.checkpoint import load_module
from morphoscale.train.fit import TrainConfig, train


def _store(root, n_wells=4, sites=(1, 2), size=64, experiments=("E1", "E2"), n_channels=6):
    rows = rxrx_rows(
        experiments=experiments,
        wells=tuple(f"{'BCDEFGHIJKLMNO'[k // 20]}{k % 20 + 2:02d}" for k in range(n_wells)),
        sites=sites,
    )
    src = write_rxrx_screen(root / "src", size=size, rows=rows, n_channels=n_channels)
    from morphoscale.data.ingest import ingest, load_ingest_config

    channels = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"][:n_channels]
    return ingest(
        load_ingest_config(None, {"format": "rxrx", "source": str(src), "workers": 1, "channels": channels}),
        root / "s.zarr",
        progress=False,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    store = _store(root)
    cfg = TrainConfig(
        model="mae_vit_tiny_patch8_64",
        model_overrides={"depth": 2, "img_size": 32},
        crop_size=32,
        batch_size=2,
        max_steps=2,
        warmup_steps=1,
    )
    ckpt = train(cfg, store, root / "run", progress=False)
    ca = train(
        TrainConfig(
            model="ca_mae_vit_tiny_patch8_64",
            model_overrides={"depth": 1, "img_size": 32},
            crop_size=32,
            batch_size=2,
            max_steps=1,
            warmup_steps=1,
        ),
        store,
        root / "ca",
        progress=False,
    )
    return root, store, ckpt, ca


def _by_hand(ckpt, store, site, tile=32, **kw):
    model = load_module(ckpt).model.eval()
    ds = TileDataset(ImageStore(store), tile)
    with torch.inference_mode():
        tiles = torch.stack([ds[site * ds.tiles_per_site + t]["image"] for t in range(ds.tiles_per_site)])
        return model.embed(tiles, **kw).mean(0).numpy()


def test_site_is_the_mean_of_its_tiles_and_well_the_mean_of_its_sites(setup, capsys):
    root, store, ckpt, _ = setup
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        ckpt,
        "--store",
        store,
        "--out",
        root / "site.h5ad",
        "--level",
        "site",
        "--quiet",
        "--chunk-sites",
        "3",
    )
    assert rc == 0, err
    sites = ad.read_h5ad(root / "site.h5ad")
    assert sites.n_obs == 16 and sites.n_vars == 192
    for s in (0, 5, 15):
        np.testing.assert_allclose(sites.X[s], _by_hand(ckpt, store, s), rtol=1e-5, atol=1e-6)
    rc, _, err = run_cli(
        capsys, "embed", "--checkpoint", ckpt, "--store", store, "--out", root / "well.h5ad", "--quiet"
    )
    assert rc == 0, err
    wells = ad.read_h5ad(root / "well.h5ad")
    assert wells.n_obs == 8 and (wells.obs["n_sites"] == 2).all() and "site_id" not in wells.obs
    key = sites.obs["plate"].astype(str) + "_" + sites.obs["well"].astype(str)
    for name in wells.obs_names:
        np.testing.assert_allclose(wells[name].X[0], sites.X[(key == name).to_numpy()].mean(0), rtol=1e-6)
    prov = wells.uns["provenance"]
    assert (
        prov["preset"] == "mae_vit_tiny_patch8_64"
        and prov["layer"] == -1
        and prov["pooling"] == "mean"
        and len(prov["checkpoint_sha256"]) == 64
    )
    assert json.loads(prov["channels"]) == ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]


def test_crop_level_layer_pooling_and_parquet(setup, capsys):
    root, store, ckpt, _ = setup
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        ckpt,
        "--store",
        store,
        "--out",
        root / "crop.h5ad",
        "--level",
        "crop",
        "--layer",
        "0",
        "--pooling",
        "cls",
        "--quiet",
    )
    assert rc == 0, err
    crops = ad.read_h5ad(root / "crop.h5ad")
    assert crops.n_obs == 16 * 4 and {"tile_y", "tile_x"} <= set(crops.obs)
    model = load_module(ckpt).model.eval()
    ds = TileDataset(ImageStore(store), 32)
    with torch.inference_mode():
        np.testing.assert_allclose(
            crops.X[5], model.embed(ds[5]["image"][None], layer=0, pooling="cls")[0].numpy(), rtol=1e-5, atol=1e-6
        )
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        ckpt,
        "--store",
        store,
        "--out",
        root / "w.parquet",
        "--format",
        "parquet",
        "--quiet",
    )
    assert rc == 0, err
    df = pd.read_parquet(root / "w.parquet")
    assert (
        len(df) == 8
        and "emb_191" in df.columns
        and {"Metadata_perturbation", "Metadata_is_control", "Metadata_obs_name"} <= set(df.columns)
    )
    assert [c for c in df.columns if not c.startswith("Metadata_")] == [
        f"emb_{k}" for k in range(192)
    ]  # features: all the rest
    # and the profile table maps as the h5ad does
    rc, _, err = run_cli(
        capsys, "map", "--embeddings", root / "w.parquet", "--out", root / "wp_map.h5ad", "--align", "center_scale"
    )
    assert rc == 0, err
    m = ad.read_h5ad(root / "wp_map.h5ad")
    assert set(m.obs["perturbation"]) == set(df["Metadata_perturbation"]) and m.n_vars == 192


def test_channel_agnostic_model_embeds_a_subset_per_channel(setup, capsys):
    root, store, _, ca = setup
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        ca,
        "--store",
        store,
        "--out",
        root / "ca.h5ad",
        "--pooling",
        "per_channel",
        "--channels",
        "DNA",
        "--channels",
        "Mito",
        "--quiet",
    )
    assert rc == 0, err
    assert ad.read_h5ad(root / "ca.h5ad").n_vars == 2 * 192


def test_mismatched_channels_fail_in_one_line(setup, tmp_path, capsys):
    root, store, ckpt, ca = setup
    five = _store(tmp_path, n_wells=2, n_channels=5)
    rc, _, err = run_cli(
        capsys, "embed", "--checkpoint", ckpt, "--store", five, "--out", tmp_path / "x.h5ad", "--quiet"
    )
    assert_one_line_error(rc, err, "the store lacks channel(s) Golgi the model was trained on")
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        ca,
        "--store",
        store,
        "--out",
        tmp_path / "x.h5ad",
        "--channels",
        "GFP",
        "--quiet",
    )
    assert_one_line_error(rc, err, "channel(s) GFP unknown to the model")
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        tmp_path / "nope.ckpt",
        "--store",
        store,
        "--out",
        tmp_path / "x.h5ad",
        "--quiet",
    )
    assert_one_line_error(rc, err, "nope.ckpt: checkpoint not found")
    assert not (tmp_path / "x.h5ad").exists()


def test_killed_embed_resumes_to_the_same_file(setup, tmp_path):
    root, store, ckpt, _ = setup
    big = _store(tmp_path, n_wells=20, sites=(1, 2, 3))
    cmd = [
        sys.executable,
        "-m",
        "morphoscale",
        "embed",
        "--checkpoint",
        str(ckpt),
        "--store",
        str(big),
        "--quiet",
        "--chunk-sites",
        "4",
        "--level",
        "site",
    ]
    ref = subprocess.run(cmd + ["--out", str(tmp_path / "ref.h5ad")], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed.h5ad"
    part = tmp_path / "killed.h5ad.partial"
    proc = subprocess.Popen(cmd + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(part.glob("chunk*.npy"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(part.glob("chunk*.npy")))
    assert not out.exists() and 3 <= done < 30
    res = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a, b = ad.read_h5ad(out), ad.read_h5ad(tmp_path / "ref.h5ad")
    np.testing.assert_array_equal(a.X, b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    untimed = ("time", "determinism")  # when it ran, and the thread count it ran at
    assert {k: v for k, v in a.uns["provenance"].items() if k not in untimed} == {
        k: v for k, v in b.uns["provenance"].items() if k not in untimed
    }
    assert not part.exists()


def _peak_rss_mb(cmd) -> float:
    code = (
        "import resource, runpy, sys; sys.argv = " + repr(cmd) + "\n"
        "try:\n    runpy.run_module('morphoscale', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(res.stdout.strip().splitlines()[-1])


def test_memory_stays_flat_as_the_store_grows(setup, tmp_path):
    root, store, ckpt, _ = setup
    small = _store(tmp_path / "small", n_wells=6, sites=(1,))
    large = _store(tmp_path / "large", n_wells=60, sites=(1,))
    args = ["morphoscale", "embed", "--checkpoint", str(ckpt), "--quiet", "--chunk-sites", "16", "--level", "site"]
    m_small = _peak_rss_mb(args + ["--store", str(small), "--out", str(tmp_path / "a.h5ad")])
    m_large = _peak_rss_mb(args + ["--store", str(large), "--out", str(tmp_path / "b.h5ad")])
    assert ad.read_h5ad(tmp_path / "b.h5ad").n_obs == 10 * ad.read_h5ad(tmp_path / "a.h5ad").n_obs
    assert m_large < 1.2 * m_small, (m_small, m_large)


def test_a_masked_unet_checkpoint_embeds_through_the_same_path(setup, capsys):
    root, store, _, _ = setup
    ckpt = train(
        TrainConfig(model="mu_net_small", crop_size=32, batch_size=2, max_steps=1, warmup_steps=0),
        store,
        root / "unet",
        progress=False,
    )
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        ckpt,
        "--store",
        store,
        "--out",
        root / "unet.h5ad",
        "--tile-size",
        "32",
        "--quiet",
    )
    assert rc == 0, err
    emb = ad.read_h5ad(root / "unet.h5ad")
    assert emb.n_vars == load_module(ckpt).model.embed_dim and emb.n_obs == 8


def test_a_rebuilt_store_never_mixes_into_a_resumed_embed(setup, tmp_path, monkeypatch):
    """An embed stopped after two chunks, then the store rebuilt at the same path from other
    images: the partial folder records the store's identity, so the resumed embed starts
    over and every row is the new store's (before, the old chunks were kept)."""
    from pathlib import Path

    import morphoscale.embed.encode as encode
    from morphoscale.data.ingest import ingest, load_ingest_config
    from morphoscale.embed import embed

    _, _, ckpt, _ = setup
    rows = rxrx_rows(experiments=("E1", "E2"), wells=("B02", "B03", "C02", "C03"), sites=(1, 2))

    def build(seed: int) -> Path:
        src = write_rxrx_screen(tmp_path / f"src{seed}", size=64, rows=rows, seed=seed)
        cfg = load_ingest_config(None, {"format": "rxrx", "source": str(src), "workers": 1})
        return ingest(cfg, tmp_path / "s.zarr", overwrite=True, progress=False)

    store = build(0)
    real, done = encode.embed_sites, []

    def stopped(*args, **kwargs):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(encode, "embed_sites", stopped)
    with pytest.raises(KeyboardInterrupt):
        embed(ckpt, store, tmp_path / "e.h5ad", level="site", chunk_sites=4, progress=False)
    monkeypatch.undo()
    assert len(list((tmp_path / "e.h5ad.partial").glob("chunk*.npy"))) == 2
    store = build(1)
    resumed = ad.read_h5ad(embed(ckpt, store, tmp_path / "e.h5ad", level="site", chunk_sites=4, progress=False))
    fresh = ad.read_h5ad(embed(ckpt, store, tmp_path / "f.h5ad", level="site", chunk_sites=4, progress=False))
    np.testing.assert_array_equal(resumed.X, fresh.X)
    assert resumed.uns["provenance"]["store_identity"] == ImageStore(store).identity()
