"""Replicate consistency and perturbation magnitude, on aligned well-level embeddings."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist, pdist


def _unit(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1)


def treatment_groups(obs: pd.DataFrame):
    """(perturbation, row positions) for every non-control perturbation, sorted by name."""
    treated = np.flatnonzero(~obs["is_control"].to_numpy(bool))
    codes, names = pd.factorize(obs["perturbation"].astype(str).to_numpy()[treated], sort=True)
    rows = np.split(treated[np.argsort(codes, kind="stable")], np.cumsum(np.bincount(codes, minlength=len(names)))[:-1])
    return list(zip(names.tolist(), rows)) if len(names) else []


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
        rows.append(
            {
                "perturbation": pert,
                "n_wells": k,
                "consistency": obs_val,
                "null_mean": float(nulls[k].mean()),
                "p_value": float(p),
            }
        )
    return pd.DataFrame(rows, columns=["perturbation", "n_wells", "consistency", "null_mean", "p_value"])


def energy_distance(A: np.ndarray, B: np.ndarray) -> float:
    """2 E|a - b| - E|a - a'| - E|b - b'| (Euclidean; the V-statistic form, zeros on the diagonals included)."""
    ab = cdist(A, B).mean()
    aa = (2 * pdist(A).sum() / (len(A) ** 2)) if len(A) > 1 else 0.0
    bb = (2 * pdist(B).sum() / (len(B) ** 2)) if len(B) > 1 else 0.0
    return float(2 * ab - aa - bb)


def perturbation_magnitude(
    X: np.ndarray, obs: pd.DataFrame, n_null: int = 200, max_controls: int = 500, seed: int = 0
) -> pd.DataFrame:
    """Per perturbation: energy distance of its wells to the control wells, and a p-value against
    a plate-matched null (batch-matched without a plate column): as many control wells, drawn
    from the same plates in the same numbers, against the remaining controls. An unmatched null
    calls every perturbation active as soon as any plate or batch effect survives alignment.

    Every null draw only reads distances between controls: they are computed once (at most
    `max_controls`, a seeded subsample), and a draw's energy distance is sums over that matrix
    (O(k^2) per draw instead of O(controls^2 x dims)). One null per plate composition, drawn
    `n_null` times from a generator seeded by `seed`."""
    rng = np.random.default_rng(seed)
    X = np.asarray(X, dtype=np.float64)
    is_ctrl = obs["is_control"].to_numpy(bool)
    unit = next((c for c in ("plate", "batch") if c in obs.columns), None)
    batch = obs[unit].astype(str).to_numpy() if unit else np.zeros(len(obs), str)
    ctrl = np.flatnonzero(is_ctrl)
    if len(ctrl) > max_controls:
        ctrl = np.sort(rng.choice(ctrl, max_controls, replace=False))
    null = _ControlNull(X[ctrl], batch[ctrl])
    groups = treatment_groups(obs)
    to_ctrl = _mean_distance_to(X, [idx for _, idx in groups], X[ctrl])
    rows, nulls = [], {}
    for (pert, idx), ab in zip(groups, to_ctrl):
        comp = tuple(
            sorted(Counter(batch[idx].tolist()).items())
        )  # (plate, wells) pairs, one null per distinct composition
        if comp not in nulls:
            nulls[comp] = null.draw(comp, n_null, rng)
        aa = 2 * pdist(X[idx]).sum() / len(idx) ** 2 if len(idx) > 1 else 0.0
        e = float(2 * ab - aa - null.within)
        p = (1 + np.sum(nulls[comp] >= e)) / (1 + n_null)
        rows.append(
            {
                "perturbation": pert,
                "n_wells": len(idx),
                "energy_distance": e,
                "null_mean": float(nulls[comp].mean()),
                "p_value": float(p),
            }
        )
    return pd.DataFrame(rows, columns=["perturbation", "n_wells", "energy_distance", "null_mean", "p_value"])


def _mean_distance_to(X: np.ndarray, groups: list[np.ndarray], C: np.ndarray, block: int = 4096) -> np.ndarray:
    """E|x - c| for each group of rows of X, against the rows of C (distances a block of rows at a time)."""
    rows = np.concatenate(groups) if groups else np.zeros(0, int)
    sums = (
        np.concatenate([cdist(X[rows[i : i + block]], C).sum(axis=1) for i in range(0, len(rows), block)])
        if len(rows)
        else np.zeros(0)
    )
    ends = np.cumsum([len(g) for g in groups])
    return np.array([sums[e - len(g) : e].sum() / (len(g) * len(C)) for g, e in zip(groups, ends)])


class _ControlNull:
    """Energy distances between control subsets and the remaining controls, from their distance matrix."""

    def __init__(self, C: np.ndarray, batch: np.ndarray):
        from scipy.spatial.distance import squareform

        self.D = squareform(pdist(C))
        self.row_sums = self.D.sum(axis=1)
        self.total = self.D.sum()
        self.n = len(C)
        self.within = self.total / self.n**2  # E|c - c'| of all controls, for the observed statistic
        self.pools = {b: np.flatnonzero(batch == b) for b in np.unique(batch)}

    def draw(self, comp: tuple, n_null: int, rng: np.random.Generator) -> np.ndarray:
        """n_null energy distances of a draw of controls in the plate composition `comp` vs the rest;
        a plate without controls (or with too few) draws from all controls instead."""
        if any(len(self.pools.get(b, ())) <= m for b, m in comp):
            pick = _sample_rows(np.arange(self.n), min(sum(m for _, m in comp), self.n - 1), n_null, rng)
        else:
            pick = np.hstack([_sample_rows(self.pools[b], m, n_null, rng) for b, m in comp])
        m, q = pick.shape[1], self.n - pick.shape[1]
        pp = self.D[pick[:, :, None], pick[:, None, :]].sum(axis=(1, 2))
        p_all = self.row_sums[pick].sum(axis=1)
        pq, qq = p_all - pp, self.total - 2 * p_all + pp
        return 2 * pq / (m * q) - pp / m**2 - qq / q**2


def _sample_rows(pool: np.ndarray, m: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of m distinct entries of pool (the m smallest of uniform keys)."""
    keys = rng.random((n, len(pool)))
    return pool[np.argpartition(keys, m - 1, axis=1)[:, :m]] if m < len(pool) else np.tile(pool, (n, 1))
