"""CORUM complexes: do a complex's members look alike in the map (KS test per complex)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, ks_2samp

from ..errors import InputError


def read_complexes(path: Path) -> dict[str, list[str]]:
    """CORUM_clusters.tsv: complex name <TAB> space-separated gene symbols."""
    path = Path(path)
    out: dict[str, list[str]] = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: complexes file not found") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise InputError(f"{path} line {n}: expected 'name<TAB>genes'")
        out[parts[0]] = list(dict.fromkeys(parts[1].split()))
    return out


def complex_ks(X: np.ndarray, genes: list[str], complexes: dict[str, list[str]], min_genes: int = 10) -> pd.DataFrame:
    """Per complex with >= min_genes genes in the map: within-complex cosines vs member-to-non-member
    cosines, two-sample KS test (two-sided), with Benjamini-Hochberg corrected p-values."""
    X = np.asarray(X, dtype=np.float64)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    index = {g: i for i, g in enumerate(genes)}
    rows = []
    for name, members in complexes.items():
        idx = np.array(sorted({index[g] for g in members if g in index}))
        if len(idx) < min_genes:
            continue
        others = np.setdiff1d(np.arange(len(genes)), idx)
        S = U[idx] @ U.T
        within = S[:, idx][np.triu_indices(len(idx), 1)]
        between = S[:, others].ravel()
        res = ks_2samp(within, between)
        rows.append(
            {
                "complex": name,
                "n_genes": len(idx),
                "ks_statistic": float(res.statistic),
                "p_value": float(res.pvalue),
                "median_within": float(np.median(within)),
                "median_between": float(np.median(between)),
            }
        )
    df = pd.DataFrame(
        rows, columns=["complex", "n_genes", "ks_statistic", "p_value", "median_within", "median_between"]
    )
    df["corrected_p_value"] = false_discovery_control(df["p_value"]) if len(df) else []
    return df
