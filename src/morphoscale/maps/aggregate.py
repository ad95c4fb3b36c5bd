"""Aggregation of aligned well (or site) embeddings to one profile per perturbation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError

METHODS = ("mean", "median")


def group_keys(obs: pd.DataFrame) -> list[str]:
    """A perturbation, and for compounds also the concentration when the table has one."""
    keys = ["perturbation"]
    if "concentration" in obs.columns and obs["concentration"].notna().any():
        keys.append("concentration")
    return keys


def aggregate(X: np.ndarray, obs: pd.DataFrame, method: str = "mean") -> tuple[np.ndarray, pd.DataFrame]:
    """One row per perturbation (x concentration); controls aggregate to their own rows, flagged.

    Returns (profiles, obs) with obs columns perturbation, perturbation_type, is_control,
    [concentration], n_rows. Rows are sorted by (is_control, perturbation, concentration).
    """
    if method not in METHODS:
        raise InputError(f"unknown aggregation '{method}'; choose mean or median")
    for col in ("perturbation", "perturbation_type", "is_control"):
        if col not in obs.columns:
            raise InputError(f"embeddings obs lacks column '{col}'")
    keys = group_keys(obs)
    frame = obs[keys + ["perturbation_type", "is_control"]].copy()
    if "concentration" in keys:
        # genes and controls have no concentration: one group each
        frame["concentration"] = pd.to_numeric(frame["concentration"], errors="coerce").where(
            frame["perturbation_type"] == "compound"
        )
    frame["is_control"] = frame["is_control"].astype(bool)
    groups = frame.groupby(["is_control"] + keys, sort=True, dropna=False, observed=True)
    codes = groups.ngroup().to_numpy()
    n_groups = groups.ngroups
    if method == "mean":
        # one sparse (groups x rows) product instead of a Python loop over groups
        from scipy import sparse

        counts = np.bincount(codes, minlength=n_groups)
        member = sparse.csr_matrix(
            (np.ones(len(codes), X.dtype if X.dtype == np.float32 else np.float64), (codes, np.arange(len(codes)))),
            shape=(n_groups, len(codes)),
        )
        profiles = np.asarray(member @ X) / counts[:, None]
    else:
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(n_groups + 1))
        profiles = np.vstack([np.median(X[order[bounds[k] : bounds[k + 1]]], axis=0) for k in range(n_groups)])
    rows = []
    for key, g in groups:
        rec = dict(zip(["is_control"] + keys, key if isinstance(key, tuple) else (key,)))
        ptypes = g["perturbation_type"].unique()
        if len(ptypes) > 1:
            raise InputError(
                f"perturbation '{rec['perturbation']}' has several perturbation types: {', '.join(map(str, ptypes))}"
            )
        rec["perturbation_type"] = ptypes[0]
        rec["n_rows"] = len(g)
        rows.append(rec)
    out = pd.DataFrame(rows)
    out = out[
        ["perturbation", "perturbation_type", "is_control"] + [k for k in keys if k != "perturbation"] + ["n_rows"]
    ]
    out.index = [
        f"{p}@{c}" if "concentration" in keys and pd.notna(c) else str(p)
        for p, c in zip(out["perturbation"], out.get("concentration", pd.Series([np.nan] * len(out))))
    ]
    return np.asarray(profiles, dtype=np.float32), out
