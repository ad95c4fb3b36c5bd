"""The corpus of bad inputs across every verb, as a new user would type them: each case is a
command and what its error must name. The promise, checked the same way for every case: exit
code 2, one line starting `error:` with no traceback, the culprit named, and the workspace
(every input and every would-be output, folders included) exactly as it was: nothing
written, nothing changed, not even a temporary. tests/test_bad_inputs.py and
tests/test_reliability.py hold the cases that need a fault injected or a bespoke check."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root: a link as its target, a folder as 'dir', a file as its content hash."""

    def state(p: Path) -> str:
        if p.is_symlink():
            return f"link {os.readlink(p)}"
        return "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()

    return {str(p): state(p) for p in sorted(root.rglob("*"))}


def _h5ad_with(src: Path, path: Path, change) -> Path:
    import anndata as ad

    a = ad.read_h5ad(src)
    a = change(a) or a
    a.write_h5ad(path)
    return path


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory, sim_store, trained):
    """A workspace: a store, its source screen, a model, its embeddings and map (copies, so
    that the snapshot covers them), and the bad files the cases feed the verbs."""
    root = tmp_path_factory.mktemp("corpus")
    mroot, ckpt = trained
    w = SimpleNamespace(root=root, out=root / "out", bad=root / "bad")
    w.out.mkdir()
    w.bad.mkdir()
    w.store = Path(shutil.copytree(sim_store, root / "store.zarr"))
    w.screen = Path(shutil.copytree(sim_store.parent / "tiny", root / "screen"))
    w.ckpt = Path(shutil.copy(ckpt, root / "model.ckpt"))
    w.emb = Path(shutil.copy(mroot / "e.h5ad", root / "e.h5ad"))
    w.map = Path(shutil.copy(mroot / "map.h5ad", root / "map.h5ad"))
    w.wells = Path(shutil.copy(mroot / "map.wells.h5ad", root / "map.wells.h5ad"))
    w.truth = w.screen / "ground_truth"
    b = w.bad
    (b / "existing.h5ad").write_text("x")
    (b / "a_folder").mkdir()
    (b / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (b / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (b / "empty.txt").write_text("")
    (b / "garbage.h5ad").write_text("not hdf5")
    (b / "garbage.ckpt").write_bytes(b"\x00" * 100)
    (b / "trunc.ckpt").write_bytes(w.ckpt.read_bytes()[:2000])
    (b / "loop").symlink_to(b / "loop")
    _h5ad_with(w.emb, b / "inf.h5ad", lambda a: a.X.__setitem__((0, 0), np.inf))
    _h5ad_with(w.emb, b / "nobatch.h5ad", lambda a: a.obs.drop(columns=["batch"], inplace=True))
    _h5ad_with(w.map, b / "map_inf.h5ad", lambda a: a.X.__setitem__((0, 0), np.inf))
    _yaml(b / "dup.yaml", "max_steps: 2\nmax_steps: 3\n")
    _yaml(b / "invalid.yaml", "max_steps: [2\n")
    _yaml(b / "list.yaml", "- max_steps\n")
    for name, text in {
        "mask_ratio": "model_overrides: {mask_ratio: 1.5}\n",
        "mask_zero": "model_overrides: {mask_ratio: 0}\n",
        "patch": "model_overrides: {patch_size: 7}\n",
        "heads": "model_overrides: {embed_dim: 100, num_heads: 3}\n",
        "depth": "model_overrides: {depth: 0}\n",
        "override_key": "model_overrides: {no_such_knob: 1}\n",
        "preset": "model: vit_enormous\n",
        "batch0": "batch_size: 0\n",
        "lr": "lr: -0.1\n",
        "wd": "weight_decay: -1\n",
        "optimizer": "optimizer: sgd2\n",
        "augment": "augment: heavy\n",
        "crop": "crop: many\n",
        "views": "views: 0\n",
        "crop_big": "crop_size: 4096\n",
        "channel": "channels: [DNA, Gamma]\n",
        "precision": "precision: fp8\n",
        "min_lr": "min_lr_ratio: 2\n",
        "holdout": "holdout_width: 1\n",
        "probe_every": "probe_every: 0\n",
        "probe_sites": "probe_sites: 2\n",
        "unknown": "max_stepz: 3\n",
        "time": "max_time_seconds: 0\n",
        "workers": "num_workers: -1\n",
        "betas": "betas: [0.9]\n",
    }.items():
        _yaml(b / f"train_{name}.yaml", text)
    header = (w.screen / "metadata.csv").read_text().splitlines()[0]
    (b / "header_only").mkdir()
    (b / "header_only" / "metadata.csv").write_text(header + "\n")
    (b / "[brackets]").mkdir()  # a folder name that is console markup, in a message
    (b / "[brackets]" / "metadata.csv").write_text(header + "\n")
    w.damaged = Path(shutil.copytree(w.store, root / "damaged.zarr"))
    chunk = w.damaged / "images" / "c.5.0.0.0"
    chunk.write_bytes(chunk.read_bytes()[:50])
    _yaml(
        b / "run_unknown.yaml",
        "name: x\ndata: {simulate: {preset: tiny}}\nencoders: [{name: a, kind: features}]\nmapp: {}\n",
    )
    _yaml(b / "run_ok.yaml", f"name: x\ndata: {{store: {w.store}}}\nencoders: [{{name: a, kind: features}}]\n")
    _yaml(b / "run_kind.yaml", "name: x\ndata: {simulate: {preset: tiny}}\nencoders: [{name: a, kind: magic}]\n")
    _yaml(
        b / "run_twice.yaml",
        "name: x\ndata: {simulate: {preset: tiny}}\nencoders: [{name: a, kind: features}, {name: a, kind: features}]\n",
    )
    _yaml(b / "run_nodata.yaml", "name: x\nencoders: [{name: a, kind: features}]\n")
    _yaml(
        b / "run_preset.yaml", "name: x\ndata: {simulate: {preset: galactic}}\nencoders: [{name: a, kind: features}]\n"
    )
    _yaml(
        b / "run_align.yaml",
        f"name: x\ndata: {{store: {w.store}}}\nencoders: [{{name: a, kind: features}}]\nmap: {{align: magic}}\n",
    )
    _yaml(
        b / "run_store.yaml", f"name: x\ndata: {{store: {b / 'a_folder'}}}\nencoders: [{{name: a, kind: features}}]\n"
    )
    _yaml(b / "run_weights.yaml", f"name: x\ndata: {{store: {w.store}}}\nencoders: [{{name: a, kind: pretrained}}]\n")
    _yaml(b / "compare_unknown.yaml", "name: g\ndata: {simulate: {preset: tiny}}\nmodelz: []\n")
    _yaml(b / "compare_empty.yaml", "name: g\ndata: {simulate: {preset: tiny}}\nmodels: []\n")
    (b / "markup").mkdir()  # a metadata value that is rich markup: printed as it is, not interpreted
    lines = (w.screen / "metadata.csv").read_text().splitlines()
    lines[1] = lines[1].replace(",A01,", ",[/i],", 1)
    (b / "markup" / "metadata.csv").write_text("\n".join(lines) + "\n")
    (b / "pairs_bad.csv").write_text("a;b\nx;y\n")
    (b / "targets_cols.csv").write_text("drug,gene\nX,Y\n")
    return w


def _s(w):
    return ["--store", w.store]


# (case id, the command given the workspace, what the one line must name)
CASES = [
    # --- simulate ---------------------------------------------------------------------
    ("simulate/unknown preset", lambda w: ["simulate", "--preset", "huge", "--out", w.out / "s"], ["huge"]),
    (
        "simulate/negative seed",
        lambda w: ["simulate", "--preset", "tiny", "--seed", "-4", "--out", w.out / "s"],
        ["--seed"],
    ),
    (
        "simulate/seed too large",
        lambda w: ["simulate", "--preset", "tiny", "--seed", str(2**32), "--out", w.out / "s"],
        ["--seed"],
    ),
    (
        "simulate/zero workers",
        lambda w: ["simulate", "--preset", "tiny", "--workers", "0", "--out", w.out / "s"],
        ["--workers"],
    ),
    ("simulate/existing output", lambda w: ["simulate", "--preset", "tiny", "--out", w.screen], ["output exists"]),
    (
        "simulate/output under a file",
        lambda w: ["simulate", "--preset", "tiny", "--out", w.bad / "empty.txt" / "s"],
        ["empty.txt"],
    ),
    (
        "simulate/overwrite a user folder",
        lambda w: ["simulate", "--preset", "tiny", "--out", w.bad, "--overwrite"],
        ["bad"],
    ),
    # --- ingest -----------------------------------------------------------------------
    (
        "ingest/unknown format",
        lambda w: ["ingest", "--format", "tiff", "--source", w.screen, "--out", w.out / "s"],
        ["tiff"],
    ),
    ("ingest/no format nor config", lambda w: ["ingest", "--source", w.screen, "--out", w.out / "s"], ["format"]),
    (
        "ingest/missing source",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.bad / "nope", "--out", w.out / "s"],
        ["nope"],
    ),
    (
        "ingest/source is a file",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.bad / "empty.txt", "--out", w.out / "s"],
        ["empty.txt"],
    ),
    (
        "ingest/source without metadata",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.bad / "a_folder", "--out", w.out / "s"],
        ["a_folder"],
    ),
    (
        "ingest/config missing",
        lambda w: ["ingest", "--config", w.bad / "nope.yaml", "--out", w.out / "s"],
        ["nope.yaml"],
    ),
    (
        "ingest/config is a folder",
        lambda w: ["ingest", "--config", w.bad / "a_folder", "--out", w.out / "s"],
        ["a_folder"],
    ),
    (
        "ingest/config not UTF-8",
        lambda w: ["ingest", "--config", w.bad / "latin1.yaml", "--out", w.out / "s"],
        ["latin1.yaml"],
    ),
    ("ingest/config a symlink loop", lambda w: ["ingest", "--config", w.bad / "loop", "--out", w.out / "s"], ["loop"]),
    (
        "ingest/config invalid YAML",
        lambda w: ["ingest", "--config", w.bad / "invalid.yaml", "--out", w.out / "s"],
        ["invalid.yaml"],
    ),
    (
        "ingest/config key twice",
        lambda w: ["ingest", "--config", w.bad / "dup.yaml", "--out", w.out / "s"],
        ["dup.yaml", "max_steps"],
    ),
    (
        "ingest/config not a mapping",
        lambda w: ["ingest", "--config", w.bad / "list.yaml", "--out", w.out / "s"],
        ["list.yaml"],
    ),
    (
        "ingest/unknown dtype",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--dtype", "float64", "--out", w.out / "s"],
        ["float64"],
    ),
    (
        "ingest/zero workers",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--workers", "0", "--out", w.out / "s"],
        ["workers"],
    ),
    (
        "ingest/column without =",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--column", "plate", "--out", w.out / "s"],
        ["--column", "plate"],
    ),
    (
        "ingest/unknown column key",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--column", "colour=x", "--out", w.out / "s"],
        ["colour"],
    ),
    (
        "ingest/path map without =",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--path-map", "s3://x", "--out", w.out / "s"],
        ["--path-map"],
    ),
    (
        "ingest/a channel named twice",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--channels", "DNA,DNA", "--out", w.out / "s"],
        ["channels", "named twice: DNA"],
    ),
    (
        "ingest/a channel without a name",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--channels", "DNA,,ER", "--out", w.out / "s"],
        ["channels", "empty name"],
    ),
    (
        "ingest/missing platemap",
        lambda w: [
            "ingest",
            "--format",
            "rxrx",
            "--source",
            w.screen,
            "--platemap",
            w.bad / "nope.csv",
            "--out",
            w.out / "s",
        ],
        ["platemap", "only for format jump"],
    ),
    (
        "ingest/missing names table",
        lambda w: [
            "ingest",
            "--format",
            "rxrx",
            "--source",
            w.screen,
            "--perturbation-names",
            w.bad / "nope.csv",
            "--out",
            w.out / "s",
        ],
        ["nope.csv"],
    ),
    (
        "ingest/output is the source",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--out", w.screen, "--overwrite"],
        ["input"],
    ),
    (
        "ingest/output inside the source",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--out", w.screen / "s.zarr"],
        ["input"],
    ),
    (
        "ingest/existing output",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--out", w.store],
        ["output exists"],
    ),
    (
        "ingest/overwrite a user folder",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--out", w.bad, "--overwrite"],
        ["image store"],
    ),
    (
        "ingest/overwrite a file",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.screen, "--out", w.bad / "empty.txt", "--overwrite"],
        ["not a folder"],
    ),
    (
        "ingest/markup in a metadata value",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.bad / "markup", "--out", w.out / "s"],
        ["[/i]"],
    ),
    (
        "ingest/header-only metadata",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.bad / "header_only", "--out", w.out / "s"],
        ["header_only", "metadata.csv"],
    ),
    (
        "ingest/a source folder named with brackets",
        lambda w: ["ingest", "--format", "rxrx", "--source", w.bad / "[brackets]", "--out", w.out / "s"],
        ["[brackets]", "metadata.csv"],
    ),
    (
        "train/a damaged chunk",
        lambda w: ["train", "--store", w.damaged, "--max-steps", "2", "--batch-size", "4", "--out", w.out / "t"],
        ["site 5", "c.5.0.0.0"],
    ),
    (
        "embed/a damaged chunk",
        lambda w: ["embed", "--checkpoint", w.ckpt, "--store", w.damaged, "--out", w.out / "e.h5ad"],
        ["site 5", "c.5.0.0.0"],
    ),
    # --- train ------------------------------------------------------------------------
    ("train/store missing", lambda w: ["train", "--store", w.bad / "nope.zarr", "--out", w.out / "t"], ["nope.zarr"]),
    ("train/store is a file", lambda w: ["train", "--store", w.bad / "empty.txt", "--out", w.out / "t"], ["empty.txt"]),
    (
        "train/config missing",
        lambda w: ["train", *_s(w), "--config", w.bad / "nope.yaml", "--out", w.out / "t"],
        ["nope.yaml"],
    ),
    (
        "train/config is a folder",
        lambda w: ["train", *_s(w), "--config", w.bad / "a_folder", "--out", w.out / "t"],
        ["a_folder"],
    ),
    (
        "train/config not UTF-8",
        lambda w: ["train", *_s(w), "--config", w.bad / "latin1.yaml", "--out", w.out / "t"],
        ["latin1.yaml"],
    ),
    (
        "train/config key twice",
        lambda w: ["train", *_s(w), "--config", w.bad / "dup.yaml", "--out", w.out / "t"],
        ["max_steps"],
    ),
    (
        "train/config invalid YAML",
        lambda w: ["train", *_s(w), "--config", w.bad / "invalid.yaml", "--out", w.out / "t"],
        ["invalid.yaml"],
    ),
    *[
        (
            f"train/config {k}",
            lambda w, k=k: ["train", *_s(w), "--config", w.bad / f"train_{k}.yaml", "--out", w.out / "t"],
            [needle],
        )
        for k, needle in {
            "mask_ratio": "mask_ratio",
            "mask_zero": "mask_ratio",
            "patch": "patch",
            "heads": "heads",
            "depth": "depth",
            "override_key": "no_such_knob",
            "preset": "vit_enormous",
            "batch0": "batch_size",
            "lr": "lr",
            "wd": "weight_decay",
            "optimizer": "optimizer",
            "augment": "augment",
            "crop": "crop",
            "views": "views",
            "crop_big": "4096",
            "channel": "Gamma",
            "precision": "precision",
            "min_lr": "min_lr_ratio",
            "holdout": "holdout_width",
            "probe_every": "probe_every",
            "probe_sites": "probe_sites",
            "unknown": "max_stepz",
            "time": "max_time_seconds",
            "workers": "num_workers",
            "betas": "betas",
        }.items()
    ],
    (
        "train/unknown model option",
        lambda w: ["train", *_s(w), "--model", "vit_enormous", "--out", w.out / "t"],
        ["vit_enormous"],
    ),
    ("train/zero batch option", lambda w: ["train", *_s(w), "--batch-size", "0", "--out", w.out / "t"], ["batch_size"]),
    (
        "train/negative steps option",
        lambda w: ["train", *_s(w), "--max-steps", "-1", "--out", w.out / "t"],
        ["max_steps"],
    ),
    ("train/unknown strategy", lambda w: ["train", *_s(w), "--strategy", "fsdp9", "--out", w.out / "t"], ["fsdp9"]),
    ("train/unknown accelerator", lambda w: ["train", *_s(w), "--accelerator", "tpu9", "--out", w.out / "t"], ["tpu9"]),
    ("train/zero devices", lambda w: ["train", *_s(w), "--devices", "0", "--out", w.out / "t"], ["devices"]),
    ("train/devices not a number", lambda w: ["train", *_s(w), "--devices", "many", "--out", w.out / "t"], ["many"]),
    ("train/nothing to resume", lambda w: ["train", *_s(w), "--resume", "--out", w.out / "t"], ["nothing to resume"]),
    (
        "train/resume from a missing file",
        lambda w: ["train", *_s(w), "--resume-from", w.bad / "nope.ckpt", "--out", w.out / "t"],
        ["nope.ckpt"],
    ),
    (
        "train/resume from garbage",
        lambda w: ["train", *_s(w), "--resume-from", w.bad / "garbage.ckpt", "--out", w.out / "t"],
        ["garbage.ckpt"],
    ),
    ("train/output is the store", lambda w: ["train", *_s(w), "--out", w.store, "--overwrite"], ["input"]),
    ("train/existing output", lambda w: ["train", *_s(w), "--out", w.screen], ["output exists"]),
    ("train/overwrite a user folder", lambda w: ["train", *_s(w), "--out", w.bad, "--overwrite"], ["training run"]),
    (
        "train/probe truth missing",
        lambda w: ["train", *_s(w), "--probe-every", "1", "--probe-truth", w.bad / "nope", "--out", w.out / "t"],
        ["nope"],
    ),
    # --- embed ------------------------------------------------------------------------
    *[
        (
            f"embed/{opt} {v}",
            lambda w, opt=opt, v=v: ["embed", "--checkpoint", w.ckpt, *_s(w), "--out", w.out / "e.h5ad", opt, v],
            [opt],
        )
        for opt, v in [
            ("--batch-size", "0"),
            ("--chunk-sites", "0"),
            ("--num-workers", "-1"),
            ("--stride", "0"),
            ("--tile-size", "-8"),
            ("--remainder", "round"),
            ("--level", "plate"),
            ("--format", "csv"),
            ("--missing", "zero"),
            ("--precision", "fp8"),
            ("--devices", "0"),
            ("--layer", "99"),
            ("--pooling", "max"),
            ("--weights-layout", "keras"),
        ]
    ],
    (
        "embed/checkpoint missing",
        lambda w: ["embed", "--checkpoint", w.bad / "nope.ckpt", *_s(w), "--out", w.out / "e.h5ad"],
        ["nope.ckpt"],
    ),
    (
        "embed/checkpoint is a folder",
        lambda w: ["embed", "--checkpoint", w.bad / "a_folder", *_s(w), "--out", w.out / "e.h5ad"],
        ["a_folder"],
    ),
    (
        "embed/checkpoint garbage",
        lambda w: ["embed", "--checkpoint", w.bad / "garbage.ckpt", *_s(w), "--out", w.out / "e.h5ad"],
        ["garbage.ckpt"],
    ),
    (
        "embed/checkpoint truncated",
        lambda w: ["embed", "--checkpoint", w.bad / "trunc.ckpt", *_s(w), "--out", w.out / "e.h5ad"],
        ["trunc.ckpt"],
    ),
    (
        "embed/neither checkpoint nor weights",
        lambda w: ["embed", *_s(w), "--out", w.out / "e.h5ad"],
        ["--checkpoint", "--weights"],
    ),
    (
        "embed/both checkpoint and weights",
        lambda w: ["embed", "--checkpoint", w.ckpt, "--weights", w.ckpt, *_s(w), "--out", w.out / "e.h5ad"],
        ["--weights"],
    ),
    (
        "embed/weights garbage",
        lambda w: ["embed", "--weights", w.bad / "garbage.ckpt", *_s(w), "--out", w.out / "e.h5ad"],
        ["garbage.ckpt"],
    ),
    (
        "embed/weights missing",
        lambda w: ["embed", "--weights", w.bad / "nope.pth", *_s(w), "--out", w.out / "e.h5ad"],
        ["nope.pth"],
    ),
    (
        "embed/channels of another model",
        lambda w: ["embed", "--checkpoint", w.ckpt, *_s(w), "--channels", "DNA", "--out", w.out / "e.h5ad"],
        ["--channels"],
    ),
    (
        "embed/store missing",
        lambda w: ["embed", "--checkpoint", w.ckpt, "--store", w.bad / "nope.zarr", "--out", w.out / "e.h5ad"],
        ["nope.zarr"],
    ),
    (
        "embed/existing output",
        lambda w: ["embed", "--checkpoint", w.ckpt, *_s(w), "--out", w.bad / "existing.h5ad"],
        ["output exists"],
    ),
    (
        "embed/output inside the store",
        lambda w: ["embed", "--checkpoint", w.ckpt, *_s(w), "--out", w.store / "e.h5ad"],
        ["input"],
    ),
    (
        "embed/output is the checkpoint",
        lambda w: ["embed", "--checkpoint", w.ckpt, *_s(w), "--out", w.ckpt, "--overwrite"],
        ["input"],
    ),
    (
        "embed/overwrite a folder",
        lambda w: ["embed", "--checkpoint", w.ckpt, *_s(w), "--out", w.bad, "--overwrite"],
        ["is a folder"],
    ),
    # --- features ---------------------------------------------------------------------
    *[
        (
            f"features/{opt} {v}",
            lambda w, opt=opt, v=v: ["features", *_s(w), "--out", w.out / "f.h5ad", opt, v],
            [needle],
        )
        for opt, v, needle in [
            ("--level", "crop", "--level"),
            ("--format", "csv", "--format"),
            ("--workers", "0", "--workers"),
            ("--chunk-sites", "0", "chunk"),
            ("--nuclear-channel", "Hoechst", "Hoechst"),
            ("--statistic", "mode", "mode"),
            ("--flatfield", "square", "square"),
            ("--texture-levels", "1", "texture"),
            ("--nucleus-diameter", "-5", "diameter"),
            ("--missing", "zero", "--missing"),
        ]
    ],
    (
        "features/store missing",
        lambda w: ["features", "--store", w.bad / "nope.zarr", "--out", w.out / "f.h5ad"],
        ["nope.zarr"],
    ),
    (
        "features/store a plain folder",
        lambda w: ["features", "--store", w.bad / "a_folder", "--out", w.out / "f.h5ad"],
        ["a_folder"],
    ),
    ("features/existing output", lambda w: ["features", *_s(w), "--out", w.bad / "existing.h5ad"], ["output exists"]),
    ("features/output inside the store", lambda w: ["features", *_s(w), "--out", w.store / "f.h5ad"], ["input"]),
    ("features/overwrite a folder", lambda w: ["features", *_s(w), "--out", w.bad, "--overwrite"], ["is a folder"]),
    # --- map --------------------------------------------------------------------------
    (
        "map/embeddings missing",
        lambda w: ["map", "--embeddings", w.bad / "nope.h5ad", "--out", w.out / "m.h5ad"],
        ["nope.h5ad"],
    ),
    (
        "map/embeddings a folder",
        lambda w: ["map", "--embeddings", w.bad / "a_folder", "--out", w.out / "m.h5ad"],
        ["a_folder"],
    ),
    (
        "map/embeddings binary csv",
        lambda w: ["map", "--embeddings", w.bad / "binary.csv", "--out", w.out / "m.h5ad"],
        ["binary.csv"],
    ),
    (
        "map/embeddings empty csv",
        lambda w: ["map", "--embeddings", w.bad / "empty.txt", "--out", w.out / "m.h5ad"],
        ["empty.txt"],
    ),
    (
        "map/an infinite value",
        lambda w: ["map", "--embeddings", w.bad / "inf.h5ad", "--out", w.out / "m.h5ad"],
        ["inf.h5ad"],
    ),
    (
        "map/obs without batch",
        lambda w: ["map", "--embeddings", w.bad / "nobatch.h5ad", "--out", w.out / "m.h5ad"],
        ["batch"],
    ),
    (
        "map/unknown aligner",
        lambda w: ["map", "--embeddings", w.emb, "--align", "magic", "--out", w.out / "m.h5ad"],
        ["magic"],
    ),
    (
        "map/unknown aggregate",
        lambda w: ["map", "--embeddings", w.emb, "--aggregate", "mode", "--out", w.out / "m.h5ad"],
        ["mode"],
    ),
    (
        "map/unknown layout",
        lambda w: ["map", "--embeddings", w.emb, "--layout", "excel", "--out", w.out / "m.h5ad"],
        ["--layout"],
    ),
    (
        "map/column without =",
        lambda w: ["map", "--embeddings", w.emb, "--column", "batch", "--out", w.out / "m.h5ad"],
        ["--column"],
    ),
    (
        "map/metadata missing",
        lambda w: ["map", "--embeddings", w.emb, "--metadata", w.bad / "nope.csv", "--out", w.out / "m.h5ad"],
        ["--metadata"],
    ),
    (
        "map/held out of a folder without a split",
        lambda w: ["map", "--embeddings", w.emb, "--held-out-of", w.bad / "a_folder", "--out", w.out / "m.h5ad"],
        ["a_folder"],
    ),
    (
        "map/exclude every perturbation",
        lambda w: [
            "map",
            "--embeddings",
            w.emb,
            *sum((["--exclude", p] for p in _perturbations(w)), []),
            "--out",
            w.out / "m.h5ad",
        ],
        ["--exclude", "leaves none"],
    ),
    ("map/output is the input", lambda w: ["map", "--embeddings", w.emb, "--out", w.emb, "--overwrite"], ["input"]),
    (
        "map/existing output",
        lambda w: ["map", "--embeddings", w.emb, "--out", w.bad / "existing.h5ad"],
        ["output exists"],
    ),
    (
        "map/overwrite a folder",
        lambda w: ["map", "--embeddings", w.emb, "--out", w.bad, "--overwrite"],
        ["is a folder"],
    ),
    # --- bench ------------------------------------------------------------------------
    ("bench/map missing", lambda w: ["bench", "--map", w.bad / "nope.h5ad", "--out", w.out / "b"], ["nope.h5ad"]),
    ("bench/map garbage", lambda w: ["bench", "--map", w.bad / "garbage.h5ad", "--out", w.out / "b"], ["garbage.h5ad"]),
    (
        "bench/map with an infinite value",
        lambda w: ["bench", "--map", w.bad / "map_inf.h5ad", "--out", w.out / "b"],
        ["map_inf.h5ad"],
    ),
    (
        "bench/annotations missing",
        lambda w: ["bench", "--map", w.map, "--annotations", w.bad / "nope", "--out", w.out / "b"],
        ["nope"],
    ),
    (
        "bench/annotations an empty folder",
        lambda w: ["bench", "--map", w.map, "--annotations", w.bad / "a_folder", "--out", w.out / "b"],
        ["a_folder"],
    ),
    (
        "bench/pairs file missing",
        lambda w: ["bench", "--map", w.map, "--pairs", f"x={w.bad / 'nope.csv'}", "--out", w.out / "b"],
        ["nope.csv"],
    ),
    (
        "bench/pairs without columns",
        lambda w: ["bench", "--map", w.map, "--pairs", f"x={w.bad / 'pairs_bad.csv'}", "--out", w.out / "b"],
        ["pairs_bad.csv"],
    ),
    (
        "bench/pairs binary",
        lambda w: ["bench", "--map", w.map, "--pairs", f"x={w.bad / 'binary.csv'}", "--out", w.out / "b"],
        ["binary.csv"],
    ),
    (
        "bench/targets missing",
        lambda w: ["bench", "--map", w.map, "--compound-targets", w.bad / "nope.csv", "--out", w.out / "b"],
        ["nope.csv"],
    ),
    (
        "bench/targets binary",
        lambda w: ["bench", "--map", w.map, "--compound-targets", w.bad / "binary.csv", "--out", w.out / "b"],
        ["binary.csv"],
    ),
    (
        "bench/targets wrong columns",
        lambda w: ["bench", "--map", w.map, "--compound-targets", w.bad / "targets_cols.csv", "--out", w.out / "b"],
        ["targets_cols.csv"],
    ),
    (
        "bench/truth missing",
        lambda w: ["bench", "--map", w.map, "--truth", w.bad / "nope", "--out", w.out / "b"],
        ["nope"],
    ),
    (
        "bench/truth not a truth folder",
        lambda w: ["bench", "--map", w.map, "--truth", w.bad / "a_folder", "--out", w.out / "b"],
        ["a_folder"],
    ),
    (
        "bench/unknown metric",
        lambda w: ["bench", "--map", w.map, "--metrics", "beauty", "--out", w.out / "b"],
        ["beauty"],
    ),
    (
        "bench/unknown protocol",
        lambda w: ["bench", "--map", w.map, "--protocol", "rxrx9", "--out", w.out / "b"],
        ["rxrx9"],
    ),
    (
        "bench/null too small",
        lambda w: ["bench", "--map", w.map, "--null-size", "5", "--out", w.out / "b"],
        ["--null-size"],
    ),
    ("bench/negative seed", lambda w: ["bench", "--map", w.map, "--seed", "-1", "--out", w.out / "b"], ["--seed"]),
    ("bench/embeddings given as the map", lambda w: ["bench", "--map", w.emb, "--out", w.out / "b"], ["e.h5ad"]),
    ("bench/output is the map", lambda w: ["bench", "--map", w.map, "--out", w.map, "--overwrite"], ["input"]),
    ("bench/existing output", lambda w: ["bench", "--map", w.map, "--out", w.bad], ["output exists"]),
    (
        "bench/overwrite a user folder",
        lambda w: ["bench", "--map", w.map, "--out", w.bad, "--overwrite"],
        ["bench folder"],
    ),
    # --- run, compare, report, datasets ---------------------------------------------------
    ("run/config missing", lambda w: ["run", w.bad / "nope.yaml", "--out", w.out / "r"], ["nope.yaml"]),
    ("run/config is a folder", lambda w: ["run", w.bad / "a_folder", "--out", w.out / "r"], ["a_folder"]),
    ("run/config not UTF-8", lambda w: ["run", w.bad / "latin1.yaml", "--out", w.out / "r"], ["latin1.yaml"]),
    ("run/config invalid YAML", lambda w: ["run", w.bad / "invalid.yaml", "--out", w.out / "r"], ["invalid.yaml"]),
    ("run/config key twice", lambda w: ["run", w.bad / "dup.yaml", "--out", w.out / "r"], ["max_steps"]),
    ("run/unknown key", lambda w: ["run", w.bad / "run_unknown.yaml", "--out", w.out / "r"], ["mapp"]),
    ("run/unknown encoder kind", lambda w: ["run", w.bad / "run_kind.yaml", "--out", w.out / "r"], ["magic"]),
    ("run/an encoder named twice", lambda w: ["run", w.bad / "run_twice.yaml", "--out", w.out / "r"], ["'a'"]),
    ("run/no data", lambda w: ["run", w.bad / "run_nodata.yaml", "--out", w.out / "r"], ["data"]),
    ("run/unknown simulator preset", lambda w: ["run", w.bad / "run_preset.yaml", "--out", w.out / "r"], ["galactic"]),
    ("run/unknown aligner", lambda w: ["run", w.bad / "run_align.yaml", "--out", w.out / "r"], ["magic"]),
    ("run/store not a store", lambda w: ["run", w.bad / "run_store.yaml", "--out", w.out / "r"], ["a_folder"]),
    (
        "run/pretrained without weights",
        lambda w: ["run", w.bad / "run_weights.yaml", "--out", w.out / "r"],
        ["weights"],
    ),
    (
        "run/unknown --from",
        lambda w: ["run", w.bad / "run_ok.yaml", "--from", "middle", "--out", w.out / "r"],
        ["middle"],
    ),
    (
        "run/a user folder as the run folder",
        lambda w: ["run", w.bad / "run_ok.yaml", "--out", w.bad],
        ["run folder"],
    ),
    ("compare/config missing", lambda w: ["compare", w.bad / "nope.yaml", "--out", w.out / "c"], ["nope.yaml"]),
    ("compare/unknown key", lambda w: ["compare", w.bad / "compare_unknown.yaml", "--out", w.out / "c"], ["modelz"]),
    ("compare/no models", lambda w: ["compare", w.bad / "compare_empty.yaml", "--out", w.out / "c"], ["models"]),
    ("compare/config not UTF-8", lambda w: ["compare", w.bad / "latin1.yaml", "--out", w.out / "c"], ["latin1.yaml"]),
    ("report/missing folder", lambda w: ["report", w.bad / "nope"], ["nope"]),
    ("report/not a run folder", lambda w: ["report", w.bad], ["not a run folder"]),
    ("report/a file", lambda w: ["report", w.bad / "empty.txt"], ["empty.txt"]),
    ("datasets/unknown example", lambda w: ["datasets", "get", "nope-dataset"], ["nope-dataset"]),
]


def _perturbations(w) -> list[str]:
    import anndata as ad

    return sorted(set(ad.read_h5ad(w.emb, backed="r").obs["perturbation"].astype(str)))


QUIET = {"simulate", "ingest", "train", "embed", "features", "bench", "run", "compare"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_changes_nothing(ws, capsys, case):
    _, command, needles = case
    args = command(ws)
    before = snapshot(ws.root)
    try:
        rc, _, err = run_cli(capsys, *args, *(["--quiet"] if args[0] in QUIET else []))
        assert_one_line_error(rc, err, *needles)
        assert snapshot(ws.root) == before  # nothing written, nothing changed, not even a temporary
    finally:  # a case that fails leaves the next ones the workspace as it was
        for p in sorted(set(snapshot(ws.root)) - set(before), key=len):
            if Path(p).exists() or Path(p).is_symlink():
                shutil.rmtree(p) if Path(p).is_dir() and not Path(p).is_symlink() else Path(p).unlink()


def test_the_corpus_is_at_least_150_cases_across_every_verb():
    """The issue's bar: this file's cases plus those of test_bad_inputs.py and test_reliability.py."""
    verbs = {c[0].split("/")[0] for c in CASES}
    assert verbs >= {"simulate", "ingest", "train", "embed", "features", "map", "bench", "run", "compare", "report"}
    assert len({c[0] for c in CASES}) == len(CASES)  # no case twice
    assert len(CASES) >= 150
