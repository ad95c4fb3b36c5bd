"""Exact mean average precision in bounded memory: copairs' mAP, computed the way a genome-scale map needs.

copairs (the field's reference) lists every positive and negative pair before ranking them:
a 17k-gene screen's activity test alone is 68k treatment wells x 1,600 control wells = 109M
pairs held at once, and its null distributions are cached under ~/.copairs with seeds that
depend on which configurations the first run happened to meet. Here the same numbers come
from blocks of queries against the candidates they are ranked among:

- AP of a query = mean over its positives (highest similarity first) of j / (j + c_j), c_j the
  negatives strictly more similar than the j-th positive: copairs' ranking, where a tie
  between a positive and a negative ranks the positive first.
- The null of one AP with k positives among n candidates: `null_size` uniform k-subsets of
  ranks (Floyd's algorithm, O(k^2) per draw instead of O(n)), seeded by (seed, k, n) alone, so
  a configuration's null never depends on the other configurations or on a cache.
- The p-value of a group's mAP is copairs': the null of the group is the mean, draw by draw,
  of its members' configuration nulls (members that share a configuration share its draws),
  p = (1 + #(null > mAP)) / (1 + null_size); Benjamini-Hochberg across groups.

tests/test_average_precision.py holds AP and mAP equal to copairs' on the same inputs, the
p-values equal given copairs' nulls, and the sampler's subsets uniform.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

from ..errors import InputError

BLOCK_ELEMENTS = 1 << 24  # comparisons held at once: bounds memory to ~16 MB of booleans per block


def _unit(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1)


def ap_from_similarities(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """AP of each row: `neg` (b, N) similarities to the negatives (-inf where a column is not
    one), `pos` (b, M) similarities to the positives (NaN padding). NaN where a row has none."""
    pos = -np.sort(-pos, axis=1)  # most similar first, padding last
    valid = ~np.isnan(pos)
    above = np.count_nonzero(neg[:, None, :] > pos[:, :, None], axis=2)
    j = np.arange(1, pos.shape[1] + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, j / (j + above), 0.0).sum(axis=1) / valid.sum(axis=1)


def _padded(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The masked entries of each row, left-aligned, NaN after them."""
    rows, cols = np.nonzero(mask)
    counts = mask.sum(axis=1)
    out = np.full((len(mask), max(int(counts.max(initial=0)), 1)), np.nan)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, slot] = values[rows, cols]
    return out


def _blocks(order: np.ndarray, widths: np.ndarray, n_candidates: int):
    """Consecutive runs of `order` whose (rows x widest positive list x candidates) stays under BLOCK_ELEMENTS."""
    start = 0
    while start < len(order):
        stop = start + 1
        widest = max(int(widths[order[start]]), 1)
        while stop < len(order):
            w = max(widest, int(widths[order[stop]]))
            if (stop + 1 - start) * w * n_candidates > BLOCK_ELEMENTS:
                break
            widest, stop = w, stop + 1
        yield order[start:stop]
        start = stop


def activity_ap(X, obs: pd.DataFrame) -> pd.DataFrame:
    """AP of every treatment well: its replicate wells (same perturbation) ranked among all control
    wells by cosine similarity; copairs' reference-index design (`average_precision` with
    pos_sameby perturbation, neg_diffby perturbation, controls never positives of each other)."""
    pert = obs["perturbation"].astype(str).to_numpy()
    is_ctrl = obs["is_control"].to_numpy(bool)
    if not is_ctrl.any():
        raise InputError("phenotypic activity needs control wells in the embeddings")
    U = _unit(X)
    treated = np.flatnonzero(~is_ctrl)
    C = U[is_ctrl]
    codes, uniq = pd.factorize(pert[treated], sort=True)
    members = [treated[codes == c] for c in range(len(uniq))]
    size = np.bincount(codes, minlength=len(uniq))[codes]
    ap = np.full(len(treated), np.nan)
    for block in _blocks(np.argsort(size, kind="stable"), size - 1, len(C)):
        rows = treated[block]
        neg = U[rows] @ C.T
        width = max(int(size[block].max()) - 1, 1)
        pos = np.full((len(block), width), np.nan)
        for i, q in enumerate(block):
            others = members[codes[q]]
            others = others[others != treated[q]]
            pos[i, : len(others)] = U[others] @ U[treated[q]]
        ap[block] = ap_from_similarities(neg, pos)
    out = pd.DataFrame(
        {
            "perturbation": pert[treated],
            "row": treated,
            "average_precision": ap,
            "n_pos_pairs": size - 1,
            "n_total_pairs": size - 1 + len(C),
        }
    )
    return out


def consistency_ap(X, genes: list[str], annotation: dict[str, list[str]], min_members: int = 2) -> pd.DataFrame:
    """AP of every (gene, group) membership: members of the same group (other genes) ranked among
    members of other groups (other genes); copairs' design with pos_sameby group, pos_diffby gene,
    neg_diffby group and gene."""
    index = {g: i for i, g in enumerate(genes)}
    meta = pd.DataFrame(
        [(name, g) for name, members in annotation.items() for g in dict.fromkeys(members) if g in index],
        columns=["group", "gene"],
    )
    sizes = meta["group"].value_counts()
    meta = meta[meta["group"].isin(sizes.index[sizes >= min_members])].reset_index(drop=True)
    if meta["group"].nunique() < 2:
        raise InputError(f"fewer than 2 annotation groups have >= {min_members} members in the map")
    U = _unit(np.asarray(X, dtype=np.float64)[meta["gene"].map(index).to_numpy()])
    grp = pd.factorize(meta["group"])[0]
    gene = pd.factorize(meta["gene"])[0]
    width = np.bincount(grp)[grp] - 1
    ap = np.full(len(meta), np.nan)
    n_pos = np.zeros(len(meta), np.int64)
    n_neg = np.zeros(len(meta), np.int64)
    for block in _blocks(np.argsort(width, kind="stable"), width, len(meta)):
        S = U[block] @ U.T
        other_gene = gene[block, None] != gene[None, :]
        same = grp[block, None] == grp[None, :]
        is_pos, is_neg = same & other_gene, ~same & other_gene
        ap[block] = ap_from_similarities(np.where(is_neg, S, -np.inf), _padded(S, is_pos))
        n_pos[block], n_neg[block] = is_pos.sum(axis=1), is_neg.sum(axis=1)
    meta["average_precision"] = np.where(n_pos > 0, ap, np.nan)
    meta["n_pos_pairs"], meta["n_total_pairs"] = n_pos, n_pos + n_neg
    return meta


def random_ap(null_size: int, k: int, n: int, seed: int) -> np.ndarray:
    """`null_size` APs of k positives placed uniformly at random among n ranks (Floyd's sampling
    of k-subsets), from a generator seeded by (seed, k, n)."""
    rng = np.random.default_rng([seed, k, n])
    ranks = np.empty((null_size, k), np.int64)
    for i, top in enumerate(range(n - k, n)):
        t = rng.integers(0, top + 1, size=null_size)
        taken = (ranks[:, :i] == t[:, None]).any(axis=1)
        ranks[:, i] = np.where(taken, top, t)
    ranks.sort(axis=1)
    # float32 as copairs' nulls: a null AP equal to an observed one compares as copairs' does
    return (np.arange(1, k + 1, dtype=np.float32) / (ranks + 1)).sum(axis=1, dtype=np.float32) / np.float32(k)


def null_distributions(confs: np.ndarray, null_size: int, seed: int) -> np.ndarray:
    """One row of null APs per (n_pos, n_total) configuration."""
    return (
        np.vstack([random_ap(null_size, int(k), int(n), seed) for k, n in confs])
        if len(confs)
        else np.zeros((0, null_size), np.float32)
    )


def normalized_ap(ap: pd.DataFrame, confs: np.ndarray, conf_index: np.ndarray) -> np.ndarray:
    """copairs' normalized AP, (AP - E[AP]) / (1 - E[AP]) clipped to [-1, 1], with its exact E[AP]
    once per configuration (copairs evaluates it once per profile, in Python)."""
    from copairs.map.normalization import expected_ap

    mu0 = np.array([expected_ap(int(k), int(n - k)) for k, n in confs])[conf_index]
    return np.clip((ap["average_precision"].to_numpy() - mu0) / np.maximum(1 - mu0, 1e-10), -1.0, 1.0)


def map_p_values(
    ap: pd.DataFrame, sameby: str, confs: np.ndarray, null_dists: np.ndarray, conf_index: np.ndarray
) -> pd.DataFrame:
    """mAP per `sameby` group and copairs' p-value: the group's null is the draw-by-draw mean of its
    members' configuration nulls (member i: configuration `confs[conf_index[i]]`, nulls in that row of `null_dists`)."""
    ap = ap.assign(normalized_average_precision=normalized_ap(ap, confs, conf_index))
    codes, groups = pd.factorize(ap[sameby], sort=True)
    n = np.bincount(codes, minlength=len(groups))
    scores = np.bincount(codes, ap["average_precision"].to_numpy(), len(groups)) / n
    normalized = np.bincount(codes, ap["normalized_average_precision"].to_numpy(), len(groups)) / n
    p = np.empty(len(groups))
    null_size = null_dists.shape[1]
    for lo in range(0, len(groups), 2048):  # groups x configurations weights, a block at a time
        sel = (codes >= lo) & (codes < lo + 2048)
        weights = np.zeros((min(2048, len(groups) - lo), len(null_dists)))
        np.add.at(weights, (codes[sel] - lo, conf_index[sel]), 1.0)
        null = (weights / n[lo : lo + 2048, None]) @ null_dists
        p[lo : lo + 2048] = (1 + (null > scores[lo : lo + 2048, None]).sum(axis=1)) / (1 + null_size)
    return pd.DataFrame(
        {
            sameby: groups,
            "n_profiles": n,
            "mean_average_precision": scores,
            "mean_normalized_average_precision": normalized,
            "p_value": p,
        }
    )


def mean_average_precision(
    ap: pd.DataFrame, sameby: str, null_size: int, threshold: float = 0.05, seed: int = 0
) -> pd.DataFrame:
    """copairs' `mean_average_precision` on a table of APs: mAP per group, p-values against the
    configuration nulls, BH-corrected, and whether each is below `threshold`."""
    ap = ap[ap["average_precision"].notna() & (ap["n_pos_pairs"] > 0)].reset_index(drop=True)
    if not len(ap):
        raise InputError(f"no {sameby} has a positive pair (replicates or fellow members) to rank")
    confs, conf_index = np.unique(ap[["n_pos_pairs", "n_total_pairs"]].to_numpy(), axis=0, return_inverse=True)
    out = map_p_values(ap, sameby, confs, null_distributions(confs, null_size, seed), conf_index.ravel())
    out["corrected_p_value"] = false_discovery_control(out["p_value"].to_numpy())
    out["below_p"] = out["p_value"] < threshold
    out["below_corrected_p"] = out["corrected_p_value"] < threshold
    return out
