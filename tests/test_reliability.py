"""Reliability across the verbs after ingest (tests/test_bad_inputs.py has the data layer's
corpus): bad inputs end in one line naming the culprit, exit 2 and nothing written; a killed
training run resumes to the same weights."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli


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
    an uninterrupted run (CPU, deterministic), bit for bit."""
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
        assert torch.equal(b[k], a[k]), k
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
        # the first chunk failed: no partial folder either (nothing in it a resume could use)
        assert not (tmp_path / "e.h5ad.partial").exists() and not (tmp_path / "f.h5ad.partial").exists()


def test_no_later_verb_writes_over_its_input(trained, sim_store, tmp_path, capsys):
    """train, embed, features, map and bench refuse an output that is, holds or lies inside
    one of their inputs, --overwrite or not; every input is left as it was."""

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


def _damage(store, site: int, how: str) -> None:
    chunk = store / "images" / f"c.{site}.0.0.0"
    if how == "missing":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:100])


@pytest.mark.parametrize("verb", ["embed", "features"])
def test_missing_blank_or_skip_is_the_users_choice_and_says_so(trained, sim_store, tmp_path, capsys, verb):
    """--missing blank profiles a damaged site as a blank image, --missing skip leaves it out;
    each warns once with the count and the first site; the sound sites' rows equal those of
    the undamaged store, and the provenance records the policy and the sites."""
    import json

    import anndata as ad

    root, ckpt = trained
    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)
    args = (
        ["embed", "--checkpoint", ckpt, "--level", "site"]
        if verb == "embed"
        else ["features", "--level", "site", "--workers", "1"]
    )
    rc, _, _ = run_cli(capsys, *args, "--store", store, "--out", tmp_path / "ref.h5ad", "--quiet")
    assert rc == 0
    ref = ad.read_h5ad(tmp_path / "ref.h5ad")
    _damage(store, 3, "missing")
    _damage(store, 10, "truncated")
    rc, _, err = run_cli(capsys, *args, "--store", store, "--out", tmp_path / "e.h5ad", "--quiet")
    assert_one_line_error(rc, err, "site 3", "missing")  # the default: error
    assert not (tmp_path / "e.h5ad").exists()
    sound = np.setdiff1d(np.arange(ref.n_obs), [3, 10])
    for policy in ("blank", "skip"):
        out = tmp_path / f"{policy}.h5ad"
        rc, _, err = run_cli(capsys, *args, "--store", store, "--out", out, "--missing", policy, "--quiet")
        assert rc == 0, err
        lines = [x for x in err.strip().splitlines() if x]
        assert len(lines) == 1 and lines[0].startswith("warning:"), err
        assert "2 of 192 sites" in lines[0] and "site 3" in lines[0] and f"--missing {policy}" in lines[0]
        got = ad.read_h5ad(out)
        prov = got.uns["provenance"]
        assert prov["missing"] == policy and json.loads(prov["damaged_sites"]) == [3, 10]
        if policy == "skip":
            assert list(got.obs_names) == list(ref.obs_names[sound])
            np.testing.assert_array_equal(got.X, ref.X[sound])
        else:
            assert list(got.obs_names) == list(ref.obs_names)
            np.testing.assert_array_equal(got.X[sound], ref.X[sound])
            assert not np.allclose(got.X[[3, 10]], ref.X[[3, 10]])
            np.testing.assert_array_equal(got.X[3], got.X[10])  # both read as the same blank image
    rc, _, err = run_cli(capsys, *args, "--store", store, "--out", tmp_path / "x.h5ad", "--missing", "zero")
    assert_one_line_error(rc, err, "--missing", "'zero'", "error, blank, skip")


def test_skipped_sites_leave_their_wells_the_mean_of_the_rest(trained, sim_store, tmp_path, capsys):
    """At well level, --missing skip averages a well over its sound sites (n_sites says how
    many); a well whose every site is damaged is left out."""

    import anndata as ad
    import zarr

    from morphoscale.data.store import read_site_table, write_site_table

    root, ckpt = trained
    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)
    table = read_site_table(store)
    table.loc[[1, 2], ["plate", "well"]] = table.loc[0, ["plate", "well"]].to_numpy()  # three sites of one well
    write_site_table(zarr.open_group(store, mode="r+"), table)
    base = ["embed", "--checkpoint", ckpt, "--store", store, "--quiet"]
    assert run_cli(capsys, *base, "--level", "site", "--out", tmp_path / "sites.h5ad")[0] == 0
    sites = ad.read_h5ad(tmp_path / "sites.h5ad")
    three = f"{table.loc[0, 'plate']}_{table.loc[0, 'well']}"
    lone = f"{table.loc[5, 'plate']}_{table.loc[5, 'well']}"
    for s in (1, 5):
        _damage(store, s, "missing")
    rc, _, err = run_cli(capsys, *base, "--out", tmp_path / "w.h5ad", "--missing", "skip")
    assert rc == 0, err
    w = ad.read_h5ad(tmp_path / "w.h5ad")
    assert lone not in w.obs_names and three in w.obs_names and w.n_obs == 192 - 2 - 1
    assert w.obs.loc[three, "n_sites"] == 2
    np.testing.assert_allclose(w[three].X[0], sites.X[[0, 2]].mean(axis=0), rtol=1e-6)


def test_overwrite_never_deletes_a_folder_morphoscale_did_not_write(trained, sim_store, tmp_path, capsys):
    """--overwrite replaces only an output of the same kind a verb wrote (a mark inside the
    folder says which); a user's folder given as the output by mistake, a folder where a file
    goes, or another kind of output is refused with one line and left as it was."""

    import yaml
    from cli_helpers import tree_state

    root, ckpt = trained
    mine = tmp_path / "my_data"
    mine.mkdir()
    (mine / "notes.txt").write_text("years of work")
    (mine / "zarr.json").write_text("{}")  # even one that looks like an output
    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)
    src = sim_store.parent / "tiny"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump({"name": "x", "data": {"store": str(store)}, "encoders": [{"name": "f", "kind": "features"}]})
    )
    bench_out = tmp_path / "bench"
    assert run_cli(capsys, "bench", "--map", root / "map.h5ad", "--out", bench_out, "--quick")[0] == 0
    kinds = {
        "simulate": (
            ["simulate", "--preset", "tiny", "--out", mine, "--overwrite"],
            "not one of morphoscale's image stores",
        ),
        "ingest": (["ingest", "--format", "rxrx", "--source", src, "--out", mine, "--overwrite"], "image store"),
        "train": (["train", "--store", store, "--out", mine, "--overwrite"], "morphoscale's training runs"),
        "train over a bench": (["train", "--store", store, "--out", bench_out, "--overwrite"], "training run"),
        "bench": (["bench", "--map", root / "map.h5ad", "--out", mine, "--overwrite", "--quick"], "bench folder"),
        "run": (["run", cfg, "--out", mine], "not a run folder"),
        "embed": (["embed", "--checkpoint", ckpt, "--store", store, "--out", mine, "--overwrite"], "is a folder"),
        "features": (["features", "--store", store, "--out", mine, "--overwrite"], "is a folder"),
        "map": (["map", "--embeddings", root / "e.h5ad", "--out", mine, "--overwrite"], "is a folder"),
    }
    before = tree_state(tmp_path)
    for name, (args, needle) in kinds.items():
        rc, _, err = run_cli(capsys, *args)
        assert_one_line_error(rc, err, needle)
        assert tree_state(tmp_path) == before, name
    ingest_file = tmp_path / "a_file"
    ingest_file.write_text("x")
    rc, _, err = run_cli(capsys, "ingest", "--format", "rxrx", "--source", src, "--out", ingest_file, "--overwrite")
    assert_one_line_error(rc, err, "is not a folder")
    assert ingest_file.read_text() == "x"
    # what a verb wrote, it replaces
    assert run_cli(capsys, "bench", "--map", root / "map.h5ad", "--out", bench_out, "--overwrite", "--quick")[0] == 0


RUN_SMALL = """
name: small
data: {simulate: {preset: tiny, seed: 0}}
workers: 2
encoders:
  - name: mae
    train: {model: mae_vit_tiny_patch8_64, model_overrides: {depth: 1}, max_steps: 30, batch_size: 8, checkpoint_every: 5}
bench: {null_size: 200, quick: true}
"""

GRID_SMALL = """
name: g
data: {simulate: {preset: tiny, seed: 0}}
models:
  - {name: mae, model: mae_vit_tiny_patch8_64, model_overrides: {depth: 1}}
augment: [none]
crop: [one]
seeds: [0, 1]
budget: {images: 160}
train: {batch_size: 8, warmup_steps: 1, lr: 1.0e-3}
bench: {null_size: 200, quick: true}
workers: 2
"""


def _start(args: list, log: Path) -> subprocess.Popen:
    """The CLI in a process of its own, its stderr to a file (a pipe nobody reads can block it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "morphoscale", *map(str, args), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        start_new_session=True,  # its workers with it, so that a kill of the group ends them all
    )


def _wait_for(cond, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not cond():
        assert proc.poll() is None, "finished before the signal"
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_ends_a_run_mid_stage_in_one_line_and_it_resumes_to_the_same_result(tmp_path, capsys):
    """`kill PID` during a training stage of `run`: one line, exit 143, no temporary anywhere
    in the run folder, the unfinished stage not recorded as done; the same command then
    finishes with the tables and embeddings of an uninterrupted run."""
    import anndata as ad

    (tmp_path / "small.yaml").write_text(RUN_SMALL)
    assert run_cli(capsys, "run", tmp_path / "small.yaml", "--out", tmp_path / "ref", "--quiet")[0] == 0
    out = tmp_path / "killed"
    proc = _start(["run", tmp_path / "small.yaml", "--out", out], tmp_path / "err.log")
    ckpts = out / "encoders" / "mae" / "train" / "checkpoints"
    _wait_for(lambda: ckpts.is_dir() and any(ckpts.glob("*.ckpt")), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    err = (tmp_path / "err.log").read_text()
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "terminated; re-run the same command to resume"
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "a temporary was left"
    assert not (out / "stages" / "train--mae.json").exists()
    assert run_cli(capsys, "run", tmp_path / "small.yaml", "--out", out, "--quiet")[0] == 0
    assert (out / "recall.csv").read_bytes() == (tmp_path / "ref" / "recall.csv").read_bytes()
    a, b = (ad.read_h5ad(d / "encoders" / "mae" / "embeddings.h5ad") for d in (tmp_path / "ref", out))
    np.testing.assert_array_equal(a.X, b.X)


def test_a_killed_compare_resumes_to_the_uninterrupted_results(tmp_path, capsys):
    """SIGKILL (no chance to clean up) while `compare` trains its second cell; the same
    command then finishes from the cells done, and every result but the clock's (wall time,
    memory) equals an uninterrupted compare's."""
    import pandas as pd

    (tmp_path / "g.yaml").write_text(GRID_SMALL)
    assert run_cli(capsys, "compare", tmp_path / "g.yaml", "--out", tmp_path / "ref", "--quiet")[0] == 0
    out = tmp_path / "killed"
    proc = _start(["compare", tmp_path / "g.yaml", "--out", out], tmp_path / "err.log")
    second = out / "encoders" / "mae-none-one-s1" / "train" / "checkpoints"
    _wait_for(lambda: second.is_dir() and any(second.glob("*.ckpt")), proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its workers, as a scheduler kills it
    proc.wait(timeout=60)
    assert (out / "stages" / "train--mae-none-one-s0.json").exists()  # the first cell was done
    rc, _, err = run_cli(capsys, "compare", tmp_path / "g.yaml", "--out", out, "--quiet")
    assert rc == 0, err
    clock = ["wall_seconds", "peak_rss_mb", "seconds", "images_per_second"]
    a, b = (pd.read_csv(d / "compare" / "results.csv") for d in (tmp_path / "ref", out))
    a, b = (x.drop(columns=[c for c in x.columns if any(k in c for k in clock)]) for x in (a, b))
    pd.testing.assert_frame_equal(a, b)


def test_killed_features_resume_to_the_same_file(sim_store, tmp_path, capsys):
    """SIGKILL `features` after a few chunks; the same command finishes from them, and the file
    equals an uninterrupted run's in every value (X, obs, var, the provenance but its clock)."""
    import anndata as ad
    import pandas as pd

    args = ["features", "--store", sim_store, "--level", "site", "--chunk-sites", "8", "--workers", "2"]
    assert run_cli(capsys, *args, "--out", tmp_path / "ref.h5ad", "--quiet")[0] == 0
    out, part = tmp_path / "f.h5ad", tmp_path / "f.h5ad.partial"
    proc = _start([*args, "--out", out], tmp_path / "err.log")
    _wait_for(lambda: len(list(part.glob("chunk*.npy"))) >= 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its workers, as a scheduler kills it
    proc.wait(timeout=60)
    assert not out.exists() and 3 <= len(list(part.glob("chunk*.npy"))) < 24
    assert run_cli(capsys, *args, "--out", out, "--quiet")[0] == 0
    a, b = ad.read_h5ad(out), ad.read_h5ad(tmp_path / "ref.h5ad")
    np.testing.assert_array_equal(a.X, b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    clock = ("time", "determinism")
    assert {k: v for k, v in a.uns["provenance"].items() if k not in clock} == {
        k: v for k, v in b.uns["provenance"].items() if k not in clock
    }
    assert not part.exists()


def _verb_args(verb: str, root: Path, ckpt: Path, store: Path, src: Path, out: Path) -> list:
    return {
        "ingest": ["ingest", "--format", "rxrx", "--source", src, "--workers", "1"],
        "embed": ["embed", "--checkpoint", ckpt, "--store", store, "--chunk-sites", "64"],
        "features": ["features", "--store", store, "--workers", "1", "--chunk-sites", "64"],
        "map": ["map", "--embeddings", root / "e.h5ad"],
        "bench": ["bench", "--map", root / "map.h5ad", "--quick", "--null-size", "200"],
    }[verb] + ["--out", out]


def _full_at(k: int, real):
    """os.replace that fails as a full disk does on its (k+1)-th call, and renames otherwise."""
    seen = []

    def replace(*a, **kw):
        seen.append(a)
        if len(seen) == k + 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **kw)

    return replace


@pytest.mark.parametrize("verb", ["ingest", "embed", "features", "map", "bench"])
def test_disk_full_at_any_rename_is_one_line_and_leaves_no_temporary(
    trained, sim_store, tmp_path, capsys, monkeypatch, verb
):
    """Every output lands by a rename (a chunk, a table, the file itself): the disk fills at
    each rename of a run in turn. Each time: one line naming no space, exit 2, no output,
    no temporary anywhere; a partial folder only where it holds finished work a resume uses."""
    root, ckpt = trained
    name = "out.h5ad" if verb in ("embed", "features", "map") else "out"
    out = tmp_path / "clean" / name
    out.parent.mkdir()
    args = _verb_args(verb, root, ckpt, sim_store, sim_store.parent / "tiny", out)
    real = os.replace
    calls = []

    def counting(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(os, "replace", counting)
    quiet = [] if verb == "map" else ["--quiet"]
    assert run_cli(capsys, *args, *quiet)[0] == 0
    n = len(calls)
    assert n >= 2
    # every rename at the start and the end (the store's and the output's own), a tenth of
    # those between (ingest's 192 site chunks are alike)
    for k in sorted({*range(min(n, 12)), *range(max(0, n - 12), n), *range(0, n, max(1, n // 10))}):
        out = tmp_path / f"full{k}" / name
        out.parent.mkdir()
        args = _verb_args(verb, root, ckpt, sim_store, sim_store.parent / "tiny", out)
        monkeypatch.setattr(os, "replace", _full_at(k, real))
        rc, _, err = run_cli(capsys, *args, *quiet)
        err = "\n".join(x for x in err.splitlines() if not x.startswith("warning:"))  # map's note on the alignment
        assert_one_line_error(rc, err, "no space left on the device")
        assert not out.exists(), f"rename {k + 1} of {n}"
        left = [p for p in out.parent.rglob("*") if ".tmp" in p.name or ".old-" in p.name or p.suffix == ".init"]
        assert not left, f"rename {k + 1} of {n} left {left}"
    monkeypatch.setattr(os, "replace", real)


def test_a_map_overwritten_on_a_full_disk_keeps_its_old_map_and_wells(trained, tmp_path, capsys, monkeypatch):
    """map --overwrite writes the map and its wells as one: the disk filling at any of the
    renames leaves the earlier map and wells as they were, never one new beside one old."""
    root, _ = trained
    out = tmp_path / "m.h5ad"
    assert run_cli(capsys, "map", "--embeddings", root / "e.h5ad", "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = os.replace
    for k in range(4):  # two moved aside, two put in place
        monkeypatch.setattr(os, "replace", _full_at(k, real))
        rc, _, err = run_cli(capsys, "map", "--embeddings", root / "e.h5ad", "--out", out, "--overwrite")
        monkeypatch.setattr(os, "replace", real)
        assert rc == 2 and "no space left" in err, err
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before, f"rename {k + 1}"
