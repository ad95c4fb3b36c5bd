"""Replicate consistency and perturbation magnitude, on aligned well-level embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist, pdist


def _unit(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1)


def treatment_groups(obs: pd.DataFrame):
    """(perturbation, row positions) for every non-control perturbation, sorted by name."""
    frame = pd.DataFrame({"p": obs["perturbation"].astype(str).to_numpy(), "i": np.arange(len(obs))})
    frame = frame[~obs["is_control"].to_numpy(bool)]
    return [(name, g["i"].to_numpy()) for name, g in frame.groupby("p", sort=True)]


def mean_pairwise_cosine(X: np.ndarray) -> float:
    U = _unit(X)
    k = len(U)
    G = U @ U.T
    return float((G.sum() - np.trace(G)) / (k * (k - 1)))


def replicate_consistency(X: np.ndarray, obs: pd.DataFrame, n_null: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per perturbation with >= 2 wells: mean pairwise cosine of its wells, and a p-value
    against the same statistic for random sets of as many treatment wells (one-sided,
    (1 + #null >= observed) / (1 + n_null))."""
    rng = np.random.default_rng(seed)
    treated = np.flatnonzero(~obs["is_control"].to_numpy(bool))
    U = _unit(np.asarray(X, dtype=np.float64))
    rows, nulls = [], {}
    for pert, idx in treatment_groups(obs):
        k = len(idx)
        if k < 2:
            continue
        if k not in nulls:
            nulls[k] = np.array([mean_pairwise_cosine(U[rng.choice(treated, k, replace=False)]) for _ in range(n_null)])
        obs_val = mean_pairwise_cosine(U[idx])
        p = (1 + np.sum(nulls[k] >= obs_val)) / (1 + n_null)
        rows.append({"perturbation": pert, "n_wells": k, "consistency": obs_val, "null_mean": float(nulls[k].mean()), "p_value": float(p)})
    return pd.DataFrame(rows, columns=["perturbation", "n_wells", "consistency", "null_mean", "p_value"])


def energy_distance(A: np.ndarray, B: np.ndarray) -> float:
    """2 E|a - b| - E|a - a'| - E|b - b'| (Euclidean; the V-statistic form, zeros on the diagonals included)."""
    ab = cdist(A, B).mean()
    aa = (2 * pdist(A).sum() / (len(A) ** 2)) if len(A) > 1 else 0.0
    bb = (2 * pdist(B).sum() / (len(B) ** 2)) if len(B) > 1 else 0.0
    return float(2 * ab - aa - bb)


def perturbation_magnitude(X: np.ndarray, obs: pd.DataFrame, n_null: int = 200, max_controls: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per perturbation: energy distance of its wells to the control wells, and a p-value against
    a plate-matched null (batch-matched without a plate column): as many control wells, drawn
    from the same plates in the same numbers, against the remaining controls. An unmatched null
    calls every perturbation active as soon as any plate or batch effect survives alignment."""
    rng = np.random.default_rng(seed)
    X = np.asarray(X, dtype=np.float64)
    is_ctrl = obs["is_control"].to_numpy(bool)
    unit = next((c for c in ("plate", "batch") if c in obs.columns), None)
    batch = obs[unit].astype(str).to_numpy() if unit else np.zeros(len(obs), str)
    ctrl = np.flatnonzero(is_ctrl)
    if len(ctrl) > max_controls:
        ctrl = np.sort(rng.choice(ctrl, max_controls, replace=False))
    ctrl_by_batch = {b: ctrl[batch[ctrl] == b] for b in np.unique(batch[ctrl])}
    rows, nulls = [], {}
    for pert, idx in treatment_groups(obs):
        k = len(idx)
        comp = tuple(sorted(pd.Series(batch[idx]).value_counts().items()))
        if comp not in nulls:
            vals = []
            for _ in range(n_null):
                pick = []
                for b, m in comp:
                    pool = ctrl_by_batch.get(b, ctrl)
                    pick.append(rng.choice(pool, min(m, max(len(pool) - 1, 1)), replace=False))
                pick = np.concatenate(pick)
                rest = np.setdiff1d(ctrl, pick)
                vals.append(energy_distance(X[pick], X[rest]))
            nulls[comp] = np.array(vals)
        e = energy_distance(X[idx], X[ctrl])
        p = (1 + np.sum(nulls[comp] >= e)) / (1 + n_null)
        rows.append({"perturbation": pert, "n_wells": k, "energy_distance": e, "null_mean": float(nulls[comp].mean()), "p_value": float(p)})
    return pd.DataFrame(rows, columns=["perturbation", "n_wells", "energy_distance", "null_mean", "p_value"])
