"""Measures against the simulated screen's ground truth, which resolve encoders better than
recall does: how much of each well's true morphology a linear readout recovers, and how
well the map's gene-gene geometry follows the true phenotypes'.

- Decoding R2: ridge regression (standardized embeddings, penalty chosen by inner
  cross-validation) from each aligned well embedding to the well's 15 true morphology
  parameters (ground_truth/wells.csv), cross-validated with folds grouped by plate, so no
  plate's wells are both fitted and scored. R2 per parameter over the out-of-fold
  predictions; the headline is their mean. Interval: jackknife of the score over the fixed
  out-of-fold predictions, leaving out one cluster of perturbations at a time (the genes
  that share a phenotype, bench/clusters.py, and the compounds that target them; each
  control well its own unit); one perturbation at a time on a screen without clusters.
- Cosine correlation: Spearman correlation between the map's gene-gene cosines and the
  cosines of the genes' true phenotypes (ground_truth/phenotypes.csv), over every pair of
  genes with a phenotype (a gene without one has no direction). Interval: delete-one-cluster
  jackknife (one gene at a time without clusters; delete-a-group, 100 groups, above 300 units).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError
from .clusters import perturbation_clusters
from .intervals import Estimate, estimate, replicate_frame

MAX_GENE_UNITS = 300
CLUSTER_UNIT = "cluster of genes sharing a phenotype"


def _units(obs: pd.DataFrame, gene_cluster=None, compound_targets=None) -> tuple[np.ndarray, str]:
    """(unit of each well, what a unit is): a perturbation's wells are one unit, or its
    cluster's wells where the screen's clusters are known; each control well is its own."""
    pert = obs["perturbation"].astype(str).to_numpy()
    control = obs["is_control"].to_numpy(bool)
    unit = "perturbation"
    if gene_cluster is not None:
        pert = np.where(control, pert, perturbation_clusters(pert, gene_cluster, compound_targets))
        unit = "cluster of perturbations sharing a phenotype"
    return np.where(control, pert + "#" + np.arange(len(obs)).astype(str), pert), unit


def _r2_by_unit(Y: np.ndarray, P: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R2 per parameter, and the mean R2 with each unit left out (replicates), from sums per unit."""
    names, codes = np.unique(units, return_inverse=True)

    def per_unit(v):
        out = np.zeros((len(names), v.shape[1]))
        np.add.at(out, codes, v)
        return out

    n = len(Y)
    n_u = np.bincount(codes, minlength=len(names))[:, None].astype(float)
    s1, s2, e2 = Y.sum(0), (Y**2).sum(0), ((Y - P) ** 2).sum(0)
    u1, u2, ue = per_unit(Y), per_unit(Y**2), per_unit((Y - P) ** 2)
    r2 = 1 - e2 / (s2 - s1**2 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        sst = (s2 - u2) - (s1 - u1) ** 2 / (n - n_u)
        reps = (1 - (e2 - ue) / sst).mean(axis=1)
    return r2, reps, names


def decoding_r2(
    X: np.ndarray,
    obs: pd.DataFrame,
    wells: pd.DataFrame,
    params: list[str],
    folds: int = 5,
    seed: int = 0,
    gene_cluster: pd.Series | None = None,
    compound_targets: pd.DataFrame | None = None,
):
    """(table of R2 per parameter, Estimate of the mean R2, replicates, out-of-fold predictions)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for c in ("plate", "well"):
        if c not in obs.columns:
            raise InputError(f"decoding R2 needs well-level embeddings with a '{c}' column")
    key = obs["plate"].astype(str) + "_" + obs["well"].astype(str)
    truth = wells.set_index("_key").reindex(key)
    found = truth[params[0]].notna().to_numpy()
    if found.sum() < 10:
        raise InputError(
            f"only {int(found.sum())} wells of the embeddings are in the ground truth (matched on plate and well)"
        )
    X, obs, Y = (
        np.asarray(X, dtype=np.float64)[found],
        obs[found].reset_index(drop=True),
        truth[params].to_numpy(np.float64)[found],
    )
    groups = obs["plate"].astype(str).to_numpy()
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise InputError("decoding R2 needs wells on at least 2 plates (folds are grouped by plate)")
    keep = Y.std(axis=0) > 0
    Y, params = Y[:, keep], [p for p, k in zip(params, keep) if k]
    P = np.zeros_like(Y)
    for train, test in GroupKFold(n_splits=min(folds, n_groups)).split(X, Y, groups):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15)))
        P[test] = model.fit(X[train], Y[train]).predict(X[test])
    well_units, unit = _units(obs, gene_cluster, compound_targets)
    r2, reps, units = _r2_by_unit(Y, P, well_units)
    table = pd.DataFrame({"parameter": params, "r2": r2})
    est = estimate(float(r2.mean()), reps, (None, 1.0), unit)
    preds = pd.DataFrame(P, columns=params)
    preds.insert(0, "well_key", key[found].to_numpy())
    return table, est, replicate_frame("decoding_r2", units, reps), preds


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def truth_cosine_correlation(
    G: np.ndarray, genes: list[str], phenotypes: pd.DataFrame, params: list[str], gene_cluster: pd.Series | None = None
) -> tuple[Estimate, pd.DataFrame, int]:
    """(Estimate of Spearman(map cosines, true cosines) over gene pairs, replicates, genes used)."""
    truth = phenotypes.set_index(phenotypes["gene"].astype(str))[params]
    idx = [i for i, g in enumerate(genes) if g in truth.index]
    T = truth.loc[[genes[i] for i in idx]].to_numpy(np.float64)
    has = np.linalg.norm(T, axis=1) > 1e-12
    idx, T = np.asarray(idx)[has], T[has]
    if len(idx) < 4:
        raise InputError(f"only {len(idx)} genes of the map have a true phenotype; the cosine correlation needs 4")
    M = np.asarray(G, dtype=np.float64)[idx]
    M = M / np.linalg.norm(M, axis=1, keepdims=True)
    T = T / np.linalg.norm(T, axis=1, keepdims=True)
    iu = np.triu_indices(len(idx), 1)
    a, b = (M @ M.T)[iu], (T @ T.T)[iu]
    value = _spearman(a, b)
    names = np.array([genes[i] for i in idx])
    unit = "gene"
    if gene_cluster is not None:
        names = gene_cluster.reindex(names).fillna(pd.Series(names, index=names)).to_numpy().astype(str)
        unit = CLUSTER_UNIT
    units, group = np.unique(names, return_inverse=True)
    if len(units) > MAX_GENE_UNITS:  # delete-a-group: units in sorted order dealt into 100 groups
        group, units = group % 100, np.array([f"group{k}" for k in range(100)])
        unit = "group of gene clusters" if gene_cluster is not None else "group of genes"
    reps = np.array(
        [_spearman(a[keep], b[keep]) for keep in ((group[iu[0]] != u) & (group[iu[1]] != u) for u in range(len(units)))]
    )
    est = estimate(value, reps, (-1.0, 1.0), unit)
    return est, replicate_frame("truth_cosine_spearman", units, reps), int(len(idx))
