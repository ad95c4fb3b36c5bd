"""Reliability across the verbs after ingest (tests/test_bad_inputs.py has the data layer's
corpus): bad inputs end in one line naming the culprit, exit 2 and nothing written; a killed
training run resumes to the same weights."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def trained(sim_store, tmp_path_factory):
    """A 2-step model and its embeddings and map, to feed the later verbs bad variants of."""
    from morphoscale.train.fit import TrainConfig, train

    root = tmp_path_factory.mktemp("rel")
    ckpt = train(
        TrainConfig(
            model="mae_vit_tiny_patch8_64", model_overrides={"depth": 1}, batch_size=4, max_steps=2, warmup_steps=1
        ),
        sim_store,
        root / "m",
        progress=False,
    )
    from morphoscale.cli import main

    assert (
        main(["embed", "--checkpoint", str(ckpt), "--store", str(sim_store), "--out", str(root / "e.h5ad"), "--quiet"])
        == 0
    )
    assert main(["map", "--embeddings", str(root / "e.h5ad"), "--out", str(root / "map.h5ad")]) == 0
    return root, ckpt


def _emb_variant(src, path, rows=None, cols=None):
    import anndata as ad

    a = ad.read_h5ad(src)
    a = a[rows if rows is not None else slice(None), cols if cols is not None else slice(None)].copy()
    a.write_h5ad(path)
    return path


def test_corpus_of_the_later_verbs(trained, sim_store, tmp_path, capsys):
    root, ckpt = trained
    (tmp_path / "trunc.ckpt").write_bytes(ckpt.read_bytes()[:5000])
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "garbage.h5ad").write_text("not hdf5")
    (tmp_path / "nooverlap.csv").write_text("entity1,entity2\nNOTAGENE1,NOTAGENE2\n")
    (tmp_path / "badtype.yaml").write_text("batch_size: many\n")
    (tmp_path / "neg.yaml").write_text("max_steps: -3\n")
    (tmp_path / "existing.h5ad").write_text("x")
    out = tmp_path / "out.h5ad"
    emb, mp = root / "e.h5ad", root / "map.h5ad"
    cases = [
        (
            ["embed", "--checkpoint", tmp_path / "trunc.ckpt", "--store", sim_store, "--out", out],
            ["trunc.ckpt", "not a morphoscale checkpoint"],
        ),
        (
            ["embed", "--checkpoint", tmp_path / "empty.ckpt", "--store", sim_store, "--out", out],
            ["empty.ckpt", "not a morphoscale checkpoint"],
        ),
        (
            ["embed", "--checkpoint", ckpt, "--store", sim_store, "--out", out, "--tile-size", "0"],
            ["--tile-size: must be at least 1"],
        ),
        (
            ["embed", "--checkpoint", ckpt, "--store", sim_store, "--out", out, "--tile-size", "32", "--stride", "-1"],
            ["--stride: must be at least 1"],
        ),
        (["simulate", "--out", tmp_path / "s", "--preset", "tiny", "--seed", "-1"], ["--seed: must be between 0"]),
        (["embed", "--checkpoint", ckpt, "--store", tmp_path, "--out", out], ["not an image store"]),
        (
            ["embed", "--checkpoint", ckpt, "--store", sim_store, "--out", tmp_path / "existing.h5ad"],
            ["existing.h5ad: output exists"],
        ),
        (["embed", "--checkpoint", ckpt, "--store", sim_store, "--out", out, "--level", "plate"], ["--level"]),
        (["embed", "--checkpoint", ckpt, "--store", sim_store, "--out", out, "--pooling", "max"], ["--pooling"]),
        (
            ["map", "--embeddings", _emb_variant(emb, tmp_path / "rows0.h5ad", rows=slice(0, 0)), "--out", out],
            ["rows0.h5ad", "empty (0 x"],
        ),
        (
            ["map", "--embeddings", _emb_variant(emb, tmp_path / "cols0.h5ad", cols=slice(0, 0)), "--out", out],
            ["cols0.h5ad", "x 0)"],
        ),
        (["map", "--embeddings", tmp_path / "garbage.h5ad", "--out", out], ["garbage.h5ad", "cannot read"]),
        (["map", "--embeddings", emb, "--out", out, "--align", "magic"], ["magic"]),
        (
            ["bench", "--map", tmp_path / "garbage.h5ad", "--out", tmp_path / "b"],
            ["garbage.h5ad", "cannot read as a map"],
        ),
        (["bench", "--map", emb, "--out", tmp_path / "b"], []),  # embeddings, not a map: refused
        (
            ["bench", "--map", mp, "--pairs", f"mine={tmp_path / 'nooverlap.csv'}", "--out", tmp_path / "b"],
            ["nooverlap.csv", "no pair of this annotation"],
        ),
        (
            ["bench", "--map", mp, "--pairs", str(tmp_path / "nooverlap.csv"), "--out", tmp_path / "b"],
            ["expected NAME=FILE"],
        ),
        (["bench", "--map", tmp_path / "nomap.h5ad", "--out", tmp_path / "b"], ["nomap.h5ad", "not found"]),
        (
            ["train", "--store", sim_store, "--out", tmp_path / "t", "--config", tmp_path / "badtype.yaml"],
            ["key 'batch_size'"],
        ),
        (
            ["train", "--store", sim_store, "--out", tmp_path / "t", "--config", tmp_path / "neg.yaml"],
            ["key 'max_steps'"],
        ),
        (["features", "--store", sim_store, "--out", tmp_path / "existing.h5ad"], ["existing.h5ad: output exists"]),
        (["report", tmp_path], ["not a run folder"]),
    ]
    for args, needles in cases:
        before = sorted(p.name for p in tmp_path.iterdir())
        rc, _, err = run_cli(capsys, *args, *(["--quiet"] if args[0] in ("embed", "train", "features") else []))
        assert_one_line_error(rc, err, *needles)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, args  # nothing written, not even a temporary


def test_disk_full_while_writing_embeddings_leaves_nothing(trained, sim_store, tmp_path, capsys, monkeypatch):
    root, ckpt = trained

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "e.h5ad"
    rc, _, err = run_cli(capsys, "embed", "--checkpoint", ckpt, "--store", sim_store, "--out", out, "--quiet")
    assert_one_line_error(rc, err, "e.h5ad", "no space left on the device")
    assert not out.exists() and not list(tmp_path.glob(".e.h5ad*")) and not list(tmp_path.glob("e.h5ad*"))


def test_read_only_output_folder_for_features(sim_store, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) and mode & os.W_OK else real(p, mode))
    try:
        rc, _, err = run_cli(capsys, "features", "--store", sim_store, "--out", ro / "f.h5ad", "--quiet")
        assert_one_line_error(rc, err, "ro: output folder is not writable")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_killed_training_resumes_to_the_same_weights(sim_store, tmp_path):
    """SIGKILL a training run after its step-4 checkpoint; `--resume` ends with the weights of
    an uninterrupted run (CPU, deterministic) to 1e-6."""
    (tmp_path / "c.yaml").write_text(
        "model: mae_vit_tiny_patch8_64\nmodel_overrides: {depth: 2}\nbatch_size: 4\nmax_steps: 10\n"
        "warmup_steps: 2\ncheckpoint_every: 2\npreview_every: 100\nlr: 1.0e-3\naugment: random\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "morphoscale",
        "train",
        "--store",
        str(sim_store),
        "--config",
        str(tmp_path / "c.yaml"),
        "--quiet",
    ]
    ref = subprocess.run(cmd + ["--out", str(tmp_path / "ref")], capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "run"
    proc = subprocess.Popen(cmd + ["--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "checkpoints" / "step0000004.ckpt").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.ckpt").exists(), "the kill came too late to test anything"
    res = subprocess.run(cmd + ["--out", str(run), "--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "model.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(run / "model.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    assert not list(run.rglob("*.tmp*"))


def test_a_torn_stage_record_is_not_a_cache_hit(tmp_path):
    """`morphoscale run` trusts a stage only when its record parses, its key matches and its outputs exist."""
    from morphoscale.flow.config import RunConfig
    from morphoscale.flow.pipeline import Flow

    cfg = RunConfig.model_validate(
        {"data": {"simulate": {"preset": "tiny"}}, "encoders": [{"name": "f", "kind": "features"}]}
    )
    flow = Flow(cfg, tmp_path / "r")
    keys = flow.keys()
    data = flow.stages[0]
    (tmp_path / "r" / "stages").mkdir(parents=True)
    rec = tmp_path / "r" / "stages" / "data.json"
    rec.write_text('{"key": "' + keys["data"] + '", "secon')  # torn write
    assert not flow._cached(data, keys["data"])
    rec.write_text('{"key": "' + keys["data"] + '"}')
    assert not flow._cached(data, keys["data"])  # outputs missing
    flow.store.mkdir(parents=True)
    assert flow._cached(data, keys["data"])
    assert not flow._cached(data, "another key")
    np.testing.assert_equal(len(keys), len(flow.stages))


@pytest.mark.parametrize("damage", ["missing", "truncated", "foreign"])
def test_a_damaged_chunk_is_one_line_naming_it_never_a_blank_site(trained, sim_store, tmp_path, capsys, damage):
    """A complete store whose chunk file is gone, cut short or another array's: embed and
    features end in one line naming the site and the file, and write nothing."""
    import shutil

    root, ckpt = trained
    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)
    chunk = store / "images" / "c.3.0.0.0"
    assert chunk.is_file()
    if damage == "missing":
        chunk.unlink()
    elif damage == "truncated":
        chunk.write_bytes(chunk.read_bytes()[:100])
    else:
        from numcodecs import Blosc

        chunk.write_bytes(Blosc(cname="lz4").encode(np.zeros(10, np.uint8)))  # a valid frame of another array
    for verb in (
        ["embed", "--checkpoint", ckpt, "--out", tmp_path / "e.h5ad"],
        ["features", "--out", tmp_path / "f.h5ad", "--workers", "1"],
    ):
        rc, _, err = run_cli(capsys, *verb, "--store", store, "--quiet")
        assert_one_line_error(rc, err, "site 3", "c.3.0.0.0")
        assert not (tmp_path / "e.h5ad").exists() and not (tmp_path / "f.h5ad").exists()


def test_no_later_verb_writes_over_its_input(trained, sim_store, tmp_path, capsys):
    """train, embed, features, map and bench refuse an output that is, holds or lies inside
    one of their inputs, --overwrite or not; every input is left as it was."""
    import shutil

    from cli_helpers import tree_state

    root, ckpt = trained
    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)
    emb, mp = tmp_path / "e.h5ad", tmp_path / "m.h5ad"
    shutil.copy(root / "e.h5ad", emb)
    shutil.copy(root / "map.h5ad", mp)
    shutil.copy(root / "map.wells.h5ad", tmp_path / "m.wells.h5ad")
    wells_named = tmp_path / "x.wells.h5ad"
    shutil.copy(root / "e.h5ad", wells_named)
    cases = [
        ["train", "--store", store, "--out", store],
        ["embed", "--checkpoint", ckpt, "--store", store, "--out", store / "e.h5ad"],
        ["features", "--store", store, "--out", store],
        ["features", "--store", store, "--out", store / "f.h5ad"],
        ["map", "--embeddings", emb, "--out", emb],
        ["map", "--embeddings", wells_named, "--out", tmp_path / "x.h5ad"],  # its wells output is the input
        ["bench", "--map", mp, "--out", tmp_path],
        ["bench", "--map", mp, "--out", mp],
    ]
    before = tree_state(tmp_path)
    for args in cases:
        quiet = ["--quiet"] if args[0] in ("train", "embed", "features", "bench") else []
        rc, _, err = run_cli(capsys, *args, "--overwrite", *quiet)
        assert_one_line_error(rc, err, "is, holds or lies inside the input", "choose another output")
        assert tree_state(tmp_path) == before, args


def test_a_torn_partial_manifest_starts_the_job_over(sim_store, tmp_path):
    """A manifest cut short by a kill is not trusted (nor a traceback): the job starts over."""
    import anndata as ad

    from morphoscale.features.extract import extract_features

    ref = ad.read_h5ad(extract_features(sim_store, tmp_path / "ref.h5ad", level="site", chunk_sites=64, progress=False))
    part = tmp_path / "f.h5ad.partial"
    part.mkdir()
    (part / "manifest.json").write_text('{"kind": "hand-cra')
    np.save(part / "chunk000000.npy", np.zeros((64, ref.n_vars), np.float32))
    out = ad.read_h5ad(extract_features(sim_store, tmp_path / "f.h5ad", level="site", chunk_sites=64, progress=False))
    np.testing.assert_array_equal(out.X, ref.X)


def test_ctrl_c_prints_one_line_for_the_whole_pool(tmp_path):
    """Ctrl-C (SIGINT to the process group) during a two-worker features run: one line, exit
    130, no traceback from any worker; the finished chunks stay for a resume."""
    from fixtures import rxrx_rows, write_rxrx_screen

    from morphoscale.data.ingest import ingest, load_ingest_config

    rows = rxrx_rows(experiments=("E1", "E2"), wells=tuple(f"B{k:02d}" for k in range(2, 22)), sites=(1, 2))
    src = write_rxrx_screen(tmp_path / "src", size=256, rows=rows)
    store = ingest(
        load_ingest_config(None, {"format": "rxrx", "source": str(src)}), tmp_path / "s.zarr", progress=False
    )
    out = tmp_path / "f.h5ad"
    cmd = [sys.executable, "-m", "morphoscale", "features", "--store", str(store), "--out", str(out)]
    proc = subprocess.Popen(
        cmd + ["--workers", "2", "--chunk-sites", "2", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # a shell's background job starts with SIGINT ignored, and Python keeps it so: the
        # child gets the default disposition back, as in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    part = tmp_path / "f.h5ad.partial"
    deadline = time.time() + 120
    while time.time() < deadline and not list(part.glob("chunk*.npy")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and list(part.glob("chunk*.npy"))


@pytest.mark.parametrize("damage", ["torn zarr.json", "torn images/zarr.json", "short site table", "no site table"])
def test_a_damaged_store_is_one_line_naming_what_is_damaged(trained, sim_store, tmp_path, capsys, damage):
    """A store whose metadata a kill or a copy tore, or whose site table has fewer rows than
    it has sites: every verb that reads it ends in one line naming the file, no traceback."""
    import shutil

    import zarr

    from morphoscale.data.store import read_site_table, write_site_table

    root, ckpt = trained
    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)
    if damage.startswith("torn"):
        meta = store / damage.split()[1]
        meta.write_text(meta.read_text()[:60])
        needles = [str(meta), "cannot be read", "damaged"]
    elif damage == "short site table":
        sites = read_site_table(store)
        group = zarr.open_group(store, mode="r+")
        del group["sites"]
        write_site_table(group, sites.iloc[:-5])
        needles = [f"{len(sites) - 5} rows for {len(sites)} sites", "damaged"]
    else:
        shutil.rmtree(store / "sites")
        needles = ["site table cannot be read", "damaged"]
    for verb in (
        ["embed", "--checkpoint", ckpt, "--out", tmp_path / "e.h5ad"],
        ["features", "--out", tmp_path / "f.h5ad", "--workers", "1"],
        ["train", "--out", tmp_path / "t"],
    ):
        rc, _, err = run_cli(capsys, *verb, "--store", store, "--quiet")
        assert_one_line_error(rc, err, *needles)
        assert not any((tmp_path / n).exists() for n in ("e.h5ad", "f.h5ad", "t")), verb


@pytest.mark.parametrize("verb", ["map", "bench"])
def test_disk_full_in_map_or_bench_leaves_nothing(trained, tmp_path, capsys, monkeypatch, verb):
    """Disk full while `map` writes its second output or while `bench` writes its tables: one
    line, and neither output nor any temporary or partial folder is left."""
    import anndata as ad
    import pandas as pd

    root, _ = trained

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if verb == "map":
        real = ad.AnnData.write_h5ad
        calls = []

        def second_fails(self, path, *args, **kwargs):
            calls.append(path)
            if len(calls) == 2:
                full()
            return real(self, path, *args, **kwargs)

        monkeypatch.setattr(ad.AnnData, "write_h5ad", second_fails)
        args = ["map", "--embeddings", root / "e.h5ad", "--out", tmp_path / "m.h5ad"]
    else:
        monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
        args = ["bench", "--map", root / "map.h5ad", "--out", tmp_path / "b", "--quick", "--quiet"]
    rc, _, err = run_cli(capsys, *args)
    err = "\n".join(line for line in err.splitlines() if not line.startswith("warning:"))  # the aligner's note
    assert_one_line_error(rc, err, "no space left on the device")
    assert list(tmp_path.iterdir()) == [], sorted(p.name for p in tmp_path.iterdir())


def test_train_refuses_a_resume_it_cannot_use_and_an_output_it_cannot_write(trained, sim_store, tmp_path, capsys):
    """A missing resume file, a checkpoint of another model, and a read-only output folder:
    one line each, before the output is touched."""
    from morphoscale.train.fit import TrainConfig, train

    root, ckpt = trained
    other = train(
        TrainConfig(model="mae_vit_tiny_patch8_64", model_overrides={"depth": 2}, batch_size=4, max_steps=1),
        sim_store,
        tmp_path / "other",
        progress=False,
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mae_vit_tiny_patch8_64\nmodel_overrides: {depth: 1}\nbatch_size: 4\nmax_steps: 3\n")
    base = ["train", "--store", sim_store, "--config", cfg, "--quiet"]
    rc, _, err = run_cli(capsys, *base, "--out", tmp_path / "a", "--resume-from", tmp_path / "nothere.ckpt")
    assert_one_line_error(rc, err, "nothere.ckpt: checkpoint not found")
    rc, _, err = run_cli(capsys, *base, "--out", tmp_path / "b", "--resume-from", other)
    assert_one_line_error(rc, err, "model.ckpt: a checkpoint of another model", "blocks.1.")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    import errno as errno_
    from pathlib import Path

    locked = tmp_path / "locked"
    locked.mkdir()
    real_mkdir = Path.mkdir

    def refused(self, *args, **kwargs):  # what a read-only folder does (root ignores permission bits)
        if self.parent == locked:
            raise PermissionError(errno_.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch_ctx = pytest.MonkeyPatch()
    monkeypatch_ctx.setattr(Path, "mkdir", refused)
    try:
        rc, _, err = run_cli(capsys, *base, "--out", locked / "t")
    finally:
        monkeypatch_ctx.undo()
    assert_one_line_error(rc, err, "permission denied")
    assert list(locked.iterdir()) == []
