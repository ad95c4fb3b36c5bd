"""Data parallelism through Lightning on CPU (gloo, 2 processes): DDP training follows the
single-process loss curve at the same global batch, a checkpoint resumes at another world
size, and DDP embedding writes the same embeddings as one process. The tests start their own
processes (the CLI, which Lightning relaunches once per rank) and wait for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

CONFIG = """model: mae_vit_tiny_patch8_64
batch_size: 8
max_steps: 4
log_every: 1
warmup_steps: 1
lr: 1.0e-3
augment: random
checkpoint_every: 2
preview_every: 2
"""


def _cli(*args, timeout=240):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    r = subprocess.run(
        [sys.executable, "-m", "morphoscale", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _losses(run) -> pd.DataFrame:
    m = pd.read_csv(run / "logs" / "metrics.csv")
    return m.dropna(subset=["train/loss"]).set_index("step")[["train/loss", "train/images_seen"]]


@pytest.fixture(scope="module")
def runs(sim_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    (root / "c.yaml").write_text(CONFIG)
    _cli(
        "train",
        "--store",
        sim_store,
        "--out",
        root / "one",
        "--config",
        root / "c.yaml",
        "--devices",
        "1",
        "--accelerator",
        "cpu",
        "--quiet",
    )
    _cli(
        "train",
        "--store",
        sim_store,
        "--out",
        root / "two",
        "--config",
        root / "c.yaml",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--accelerator",
        "cpu",
        "--quiet",
    )
    return root


def test_ddp_training_follows_the_single_process_loss_curve(runs):
    one, two = _losses(runs / "one"), _losses(runs / "two")
    assert list(one.index) == list(two.index) == [0, 1, 2, 3]
    np.testing.assert_allclose(two["train/loss"], one["train/loss"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(
        two["train/images_seen"], one["train/images_seen"]
    )  # counted over both ranks: 8 per step
    assert one["train/loss"].iloc[-1] < one["train/loss"].iloc[0]
    a = torch.load(runs / "one" / "model.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(runs / "two" / "model.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=k)
    assert not list((runs / "two").glob(".model.ckpt.tmp*"))


def test_a_ddp_checkpoint_resumes_in_one_process_on_the_same_curve(runs, sim_store):
    ckpt = runs / "two" / "checkpoints" / "step0000002.ckpt"
    assert ckpt.exists()
    _cli(
        "train",
        "--store",
        sim_store,
        "--out",
        runs / "resumed",
        "--config",
        runs / "c.yaml",
        "--devices",
        "1",
        "--accelerator",
        "cpu",
        "--resume-from",
        ckpt,
        "--quiet",
    )
    one, resumed = _losses(runs / "one"), _losses(runs / "resumed")
    assert list(resumed.index) == [2, 3]
    np.testing.assert_allclose(resumed["train/loss"], one.loc[[2, 3], "train/loss"], atol=1e-4, rtol=0)


def test_ddp_embedding_writes_what_one_process_writes(runs, sim_store):
    import anndata as ad

    ckpt = runs / "one" / "model.ckpt"
    common = ["--checkpoint", ckpt, "--store", sim_store, "--chunk-sites", "40", "--level", "site", "--quiet"]
    _cli("embed", *common, "--out", runs / "e1.h5ad")
    _cli("embed", *common, "--out", runs / "e2.h5ad", "--devices", "2", "--accelerator", "cpu")
    a, b = ad.read_h5ad(runs / "e1.h5ad"), ad.read_h5ad(runs / "e2.h5ad")
    np.testing.assert_array_equal(a.X, b.X)  # bit for bit
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert list(a.var_names) == list(b.var_names)
    pa, pb = dict(a.uns["provenance"]), dict(b.uns["provenance"])
    pa.pop("time"), pb.pop("time")
    da, db = json.loads(pa.pop("determinism")), json.loads(pb.pop("determinism"))
    assert pa == pb
    assert {**da, "threads": None} == {**db, "threads": None}  # each process records its own thread count
    assert not (runs / "e2.h5ad.partial").exists()


def test_sampler_shards_each_global_batch_without_duplicates():
    from morphoscale.train.data import ResumableSampler

    total, B = 40, 8
    single = list(ResumableSampler(total, B))
    for world in (2, 4):
        shards = [list(ResumableSampler(total, B, r, world)) for r in range(world)]
        assert sorted(sum(shards, [])) == single  # every sample once
        for step in range(total // B):  # step by step, the ranks hold exactly one process's batch
            b = B // world
            assert sorted(k for s in shards for k in s[step * b : (step + 1) * b]) == single[step * B : (step + 1) * B]
        s = ResumableSampler(total, B, 1, world)
        s.set_start(16)  # resume at step 2
        assert list(s) == [k for k in shards[1] if k >= 16] and len(s) == len(list(s))
    with pytest.raises(ValueError):
        ResumableSampler(total, 6, 0, 4)


def test_sharded_masking_noise_is_the_single_process_noise():
    from morphoscale.models.noise import ShardGenerator, batch_uniform

    full = batch_uniform(8, 16, "cpu", torch.Generator().manual_seed(3))
    parts = [batch_uniform(4, 16, "cpu", ShardGenerator(torch.Generator().manual_seed(3), r, 2)) for r in range(2)]
    torch.testing.assert_close(torch.cat(parts), full, rtol=0, atol=0)


def test_a_global_batch_that_does_not_split_is_a_config_error(sim_store, tmp_path, capsys):
    from cli_helpers import assert_one_line_error, run_cli

    rc, _, err = run_cli(
        capsys,
        "train",
        "--store",
        sim_store,
        "--out",
        tmp_path / "x",
        "--batch-size",
        "7",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--accelerator",
        "cpu",
        "--max-steps",
        "1",
        "--quiet",
    )
    assert_one_line_error(rc, err, "key 'batch_size'")
    assert not (tmp_path / "x").exists()


def test_resource_accounting_of_a_run(runs):
    """resources.json of the runs: images counted over ranks, FLOPs counted by torch."""
    one = json.loads((runs / "one" / "resources.json").read_text())
    two = json.loads((runs / "two" / "resources.json").read_text())
    assert one["images_seen"] == two["images_seen"] == 4 * 8 and one["optimizer_steps"] == 4
    assert two["world_size"] == 2 and one["parameters"] == two["parameters"]
    assert one["flops_per_image"] == pytest.approx(two["flops_per_image"], rel=1e-9)  # per image, whatever the split
    assert one["training_flops"] == pytest.approx(one["flops_per_image"] * 32)
    assert 0 < one["wall_seconds"] and one["images_per_second"] == pytest.approx(32 / one["wall_seconds"], rel=1e-2)
