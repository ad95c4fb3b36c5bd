"""`morphoscale run --check-reproducible STAGE`: run a finished stage again and compare.

The run's own outputs are moved aside while the stage re-runs in place (so the stage sees
exactly the inputs and paths it saw the first time), the re-run's outputs go to
`reproduce/<stage>/` for inspection, and the originals come back, whether or not the
re-run succeeded. What is compared is what the stage computed, never when it ran: the
tensors of a checkpoint, the matrix and tables of an .h5ad, the numbers of a table or of
a summary (times, dates and peak memory left out).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.markup import escape

from ..errors import InputError
from ..io import remove

if TYPE_CHECKING:
    import pandas as pd

# keys whose values are when or how fast, not what: never compared
_VOLATILE = (
    "time",
    "seconds",
    "per_second",
    "started",
    "finished",
    "peak",
    "rss_mb",
    "gpu_mb",
    "img_s",
    "elapsed",
    "path",
    "store",
    "out",
)


def _volatile(key: str) -> bool:
    k = key.lower().rsplit("/", 1)[-1]  # metrics.csv names: probe/seconds, train/img_s
    return any(v == k or k.endswith("_" + v) or k.startswith(v + "_") for v in _VOLATILE)


def stages_to_check(flow, names: list[str]) -> list:
    """Stage ids or kinds (`train` means every train stage) -> the stages, in flow order."""
    ids = {s.id for s in flow.stages}
    kinds = {s.kind for s in flow.stages}
    for n in names:
        if n not in ids and n not in kinds:
            raise InputError(
                f"--check-reproducible: '{n}' is not a stage of this run; stages: "
                f"{', '.join(s.id for s in flow.stages if s.kind != 'report')}"
            )
        if n.startswith("report"):
            raise InputError(
                "--check-reproducible: the report only lays out other stages' numbers; check the stages it reads"
            )
    return [s for s in flow.stages if s.id in names or s.kind in names]


def _unit(flow, s) -> list[Path]:
    """What the stage writes and a re-run replaces: the training folder for train, else its outputs."""
    if s.kind == "train":
        return [s.outputs[0].parent]
    if s.kind == "data" and flow.cfg.data.store:
        raise InputError(
            "--check-reproducible: data.store names a store this run did not build; there is nothing to re-run"
        )
    return list(s.outputs)


def check_stage(flow, s) -> list[dict]:
    """Re-run stage `s` of a finished run and compare each output with the run's own."""
    keys = flow.keys()
    if not flow._cached(s, keys[s.id]):
        raise InputError(f"--check-reproducible: stage {s.id} has not finished in {flow.out} (run it first)")
    units = _unit(flow, s)
    aside = flow.out / "reproduce" / ".original"
    again = flow.out / "reproduce" / s.id.replace(":", "--")
    remove(again)
    aside.mkdir(parents=True, exist_ok=True)
    moved = []
    try:
        for i, p in enumerate(units):
            if p.exists():
                target = aside / f"{i}-{p.name}"
                remove(target)
                os.replace(p, target)
                moved.append((p, target))
        s.action()
        again.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(units):
            if p.exists():
                os.replace(p, again / f"{i}-{p.name}")
    finally:
        for p, target in moved:
            remove(p)  # a half-written re-run output, if the re-run failed
            os.replace(target, p)
        remove(aside)
    rows = []
    for i, p in enumerate(units):
        rerun = again / f"{i}-{p.name}"
        for orig, new in _pairs(p, rerun):
            rows.append({"stage": s.id, "output": str(orig.relative_to(flow.out)), **compare(orig, new)})
    return rows


def _pairs(orig: Path, new: Path):
    """Files of an output to compare (a folder: its comparable files; logs and images left out)."""
    if orig.is_dir() and not orig.name.endswith(".zarr"):
        for f in sorted(orig.rglob("*")):
            if (
                f.is_file()
                and f.suffix in (".ckpt", ".h5ad", ".csv", ".parquet", ".json")
                and "tensorboard" not in f.parts
                and "checkpoints" not in f.parts
            ):
                yield f, new / f.relative_to(orig)
    else:
        yield orig, new


def compare(a: Path, b: Path) -> dict:
    """{'equal': bool, 'max_abs_diff': float, 'detail': str} for two outputs of one kind."""
    if not b.exists():
        return {"equal": False, "max_abs_diff": math.nan, "detail": "the re-run did not write it"}
    if a.suffix == ".ckpt":
        return _compare_arrays(*(_checkpoint_tensors(p) for p in (a, b)))
    if a.suffix == ".h5ad":
        return _compare_h5ad(a, b)
    if a.suffix == ".zarr":
        return _compare_store(a, b)
    if a.suffix in (".csv", ".parquet"):
        return _compare_tables(a, b)
    if a.suffix == ".json":
        return _compare_arrays(_numbers(json.loads(a.read_text())), _numbers(json.loads(b.read_text())))
    same = a.read_bytes() == b.read_bytes()
    return {"equal": same, "max_abs_diff": 0.0 if same else math.nan, "detail": "" if same else "bytes differ"}


def _checkpoint_tensors(path: Path) -> dict[str, np.ndarray]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v.detach().float().numpy() for k, v in state.items()}


def _compare_arrays(a: dict, b: dict) -> dict:
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))
        return {"equal": False, "max_abs_diff": math.nan, "detail": f"different entries, e.g. {missing[0]}"}
    worst, first = 0.0, ""
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape:
            return {"equal": False, "max_abs_diff": math.nan, "detail": f"{k}: shape {x.shape} against {y.shape}"}
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            same = np.array_equal(x, y, equal_nan=True)
            d = float(np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size and not same else 0.0
        else:
            same, d = bool(np.array_equal(x, y)), 0.0
        if not same:
            worst = max(worst, d if np.isfinite(d) else math.inf)
            first = first or k
    return {"equal": not first, "max_abs_diff": worst, "detail": f"first difference: {first}" if first else ""}


def _compare_h5ad(a: Path, b: Path) -> dict:
    import anndata as ad

    x, y = ad.read_h5ad(a), ad.read_h5ad(b)
    if not (x.obs.index.equals(y.obs.index) and x.var.index.equals(y.var.index)):
        return {"equal": False, "max_abs_diff": math.nan, "detail": "rows or columns differ"}
    return _compare_arrays(_h5ad_arrays(x), _h5ad_arrays(y))


def _h5ad_arrays(d) -> dict:
    """X and every obs column that is not a time or a path."""
    return {"X": np.asarray(d.X), **{f"obs.{c}": d.obs[c].to_numpy() for c in d.obs.columns if not _volatile(c)}}


def _compare_store(a: Path, b: Path) -> dict:
    """Two image stores, site by site (a store need not fit in memory)."""
    from ..data.store import ImageStore

    x, y = ImageStore(a), ImageStore(b)
    if len(x) != len(y):
        return {"equal": False, "max_abs_diff": math.nan, "detail": f"{len(x)} sites against {len(y)}"}
    result = {"equal": True, "max_abs_diff": 0.0, "detail": ""}
    for i in range(len(x)):
        r = _compare_arrays({f"images[{i}]": x.read(i)}, {f"images[{i}]": y.read(i)})
        if not r["equal"]:
            result = {
                "equal": False,
                "max_abs_diff": max(result["max_abs_diff"], r["max_abs_diff"]),
                "detail": result["detail"] or r["detail"],
            }
    return result


def _compare_tables(a: Path, b: Path) -> dict:
    import pandas as pd

    read = pd.read_parquet if a.suffix == ".parquet" else pd.read_csv
    x, y = read(a), read(b)
    if list(x.columns) != list(y.columns) or len(x) != len(y):
        return {"equal": False, "max_abs_diff": math.nan, "detail": "columns or rows differ"}
    return _compare_arrays(
        {c: x[c].to_numpy() for c in x.columns if not _volatile(c)},
        {c: y[c].to_numpy() for c in y.columns if not _volatile(c)},
    )


def _numbers(obj, prefix: str = "") -> dict:
    """A JSON document flattened to {path: value}, volatile keys left out."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not _volatile(str(k)):
                out.update(_numbers(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = np.asarray(np.nan if obj is None else obj)
    return out


def check_reproducible(flow, names: list[str], console=None) -> "pd.DataFrame":
    """Re-run each named stage of a finished run and compare; writes reproducible.csv."""
    import pandas as pd

    from ..io import write_text

    stages = stages_to_check(flow, names)
    rows = []
    for s in stages:
        if console is not None:
            console.print(f"[bold]re-running {escape(s.id)}[/bold] to compare with the run's own outputs ...")
        rows += check_stage(flow, s)
    table = pd.DataFrame(rows, columns=["stage", "output", "equal", "max_abs_diff", "detail"])
    write_text(flow.out / "reproducible.csv", table.to_csv(index=False))
    return table
