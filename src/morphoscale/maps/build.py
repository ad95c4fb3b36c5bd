"""`morphoscale map`: embeddings -> filter -> align on controls -> aggregate -> map (AnnData)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..determinism import record
from ..errors import InputError, why
from ..io import atomic_file, atomic_files
from . import DEFAULT_ALIGNER
from .aggregate import aggregate
from .align import make_aligner

REQUIRED_OBS = ("perturbation", "perturbation_type", "is_control", "batch")


def read_h5ad(path: Path, what: str, expected: str):
    """An AnnData file, or a one-line error naming it: `what` it is (not found), `expected` (unreadable)."""
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} file not found")
    try:
        return ad.read_h5ad(path)
    except Exception as e:
        raise InputError(f"{path}: cannot read as {expected} ({why(e)})") from None


def read_embeddings(path: Path):
    path = Path(path)
    emb = read_h5ad(path, "embeddings", "AnnData .h5ad")
    missing = [c for c in REQUIRED_OBS if c not in emb.obs.columns]
    if missing:
        raise InputError(f"{path}: obs lacks column(s) {', '.join(missing)}")
    if emb.n_obs == 0 or emb.n_vars == 0:
        raise InputError(f"{path}: the embedding matrix is empty ({emb.n_obs} x {emb.n_vars})")
    X = np.asarray(emb.X.toarray() if hasattr(emb.X, "toarray") else emb.X)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        first = emb.obs_names[np.argmax(bad)]
        raise InputError(f"{path}: {int(bad.sum())} rows have NaN or infinite values (first: obs '{first}')")
    return emb


def build_map(
    emb,
    align: str = DEFAULT_ALIGNER,
    method: str = "mean",
    exclude: list[str] | None = None,
):
    """Returns (map AnnData, aligned well-level AnnData)."""
    import anndata as ad

    from .aggregate import METHODS

    if method not in METHODS:  # before the alignment's work (and its warnings)
        raise InputError(f"--aggregate: '{method}' is not one of {', '.join(METHODS)}")
    obs = emb.obs.copy()
    X = np.asarray(emb.X)
    X = X.astype(np.float32 if X.dtype == np.float32 else np.float64, copy=False)
    keep = np.ones(len(obs), bool)
    if exclude:
        keep &= ~obs["perturbation"].astype(str).isin(exclude).to_numpy()
    if not keep.any():
        raise InputError(f"--exclude: leaves none of the {len(keep)} wells to map")
    obs, X = obs[keep], X[keep]
    obs["is_control"] = obs["is_control"].astype(bool)
    batch = obs["batch"].astype(str).to_numpy()
    aligner = make_aligner(align)
    Xa = aligner.fit_transform(X, batch, obs["is_control"].to_numpy())
    aligned = ad.AnnData(X=Xa.astype(np.float32), obs=obs.set_axis(obs.index.astype(str)))
    aligned.var_names = feature_names(emb.var_names, aligner, Xa.shape[1])
    profiles, mobs = aggregate(Xa, obs, method)
    n_pert = int((~mobs["is_control"]).sum())
    if n_pert < 2:
        raise InputError(f"the map has {n_pert} perturbation(s) besides controls; at least 2 are needed")
    prov = dict(emb.uns.get("provenance", {})) if isinstance(emb.uns.get("provenance", {}), dict) else {}
    uns = {
        "provenance": {
            **{f"embedding_{k}": v for k, v in prov.items() if isinstance(v, (str, int, float))},
            "align": align,
            "aggregate": method,
            "n_input_rows": int(len(obs)),
            "morphoscale_version": __version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "determinism": json.dumps(record(with_torch=False)),
        }
    }
    uns["alignment"] = _alignment_record(aligner.summary_)
    aligned.uns = {"provenance": dict(uns["provenance"]), "alignment": dict(uns["alignment"])}
    m = ad.AnnData(X=profiles, obs=mobs, uns=uns)
    m.var_names = aligned.var_names
    return m, aligned


def feature_names(names, aligner, n: int) -> list[str]:
    """The map's columns: the embedding's own names where the alignment keeps its features
    (none, center_scale), else the aligner's components (tvn_per_batch_0, ...), never 0, 1, ..."""
    if aligner.keeps_features and len(names) == n:
        return [str(v) for v in names]
    return [f"{aligner.name}_{k}" for k in range(n)]


def _alignment_record(summary: dict) -> dict:
    """What the aligner kept and why, in a form .h5ad stores (no empty lists)."""
    rec = {k: v for k, v in summary.items() if k != "warnings"}
    rec["warnings"] = "; ".join(summary.get("warnings", [])) or "none"
    return rec


def write_h5ad(adata, path: Path, overwrite: bool) -> None:
    with atomic_file(Path(path), overwrite) as tmp:
        adata.write_h5ad(tmp)


def write_map(m, aligned, path: Path, overwrite: bool) -> None:
    """The map and its aligned wells (<name>.wells.h5ad) together: both are written to
    temporary names first, so a failure while writing either (disk full) leaves neither."""
    with atomic_files([wells_path(path), Path(path)], overwrite) as (wells_tmp, map_tmp):
        aligned.write_h5ad(wells_tmp)
        m.write_h5ad(map_tmp)


def wells_path(map_path: Path) -> Path:
    """Where `map` puts the aligned well-level embeddings beside the map."""
    p = Path(map_path)
    return p.with_name(p.name[: -len(".h5ad")] + ".wells.h5ad" if p.name.endswith(".h5ad") else p.name + ".wells.h5ad")
