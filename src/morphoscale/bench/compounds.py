"""Compounds against genes: target retrieval and the MIDL 2022 drug-drug similarity score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError


def read_targets(path) -> dict[str, list[str]]:
    """CSV with columns compound,target (one row per compound-target pair)."""
    from ..data.readers.base import read_table

    df = read_table(path)
    missing = [c for c in ("compound", "target") if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (expected compound,target)")
    df = df[(df["compound"] != "") & (df["target"] != "")]
    return {c: sorted(set(g["target"])) for c, g in df.groupby("compound")}


def _unit(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def compound_gene_retrieval(
    compound_X, compounds: list[str], gene_X, genes: list[str], targets: dict[str, list[str]], block: int = 2048
) -> pd.DataFrame:
    """For each compound with a target in the map: rank every gene by cosine to the compound;
    ROC-AUC and average precision of its annotated targets. Random: AUC 0.5, AP = targets / genes.

    sklearn's definitions (`roc_auc_score`: ties count half; `average_precision_score`: one
    threshold per distinct score), computed for a block of compounds at once from counts:
    AUC = sum over targets of (#non-targets below + half the tied) / (targets x non-targets),
    AP = mean over targets t of (#targets scoring >= t) / (#genes scoring >= t)."""
    C, G = _unit(compound_X), _unit(gene_X)
    gene_set = {g: i for i, g in enumerate(genes)}
    hits = [[gene_set[t] for t in dict.fromkeys(targets.get(comp, [])) if t in gene_set] for comp in compounds]
    keep = [k for k, h in enumerate(hits) if h and len(h) < len(genes)]
    auc, ap = np.zeros(len(keep)), np.zeros(len(keep))
    for lo in range(0, len(keep), block):
        rows = keep[lo : lo + block]
        S = C[rows] @ G.T
        width = max(len(hits[k]) for k in rows)
        idx = np.array(
            [hits[k] + [hits[k][0]] * (width - len(hits[k])) for k in rows]
        )  # padded with a repeat, masked below
        valid = np.arange(width)[None, :] < np.array([len(hits[k]) for k in rows])[:, None]
        s = np.take_along_axis(S, idx, axis=1)
        ge, gt = (S[:, None, :] >= s[:, :, None]).sum(axis=2), (S[:, None, :] > s[:, :, None]).sum(axis=2)
        pos_ge = ((s[:, None, :] >= s[:, :, None]) & valid[:, None, :]).sum(axis=2)
        pos_gt = ((s[:, None, :] > s[:, :, None]) & valid[:, None, :]).sum(axis=2)
        n_pos = valid.sum(axis=1)
        n_neg = len(genes) - n_pos
        neg_lt = (len(genes) - ge) - (n_pos[:, None] - pos_ge)  # non-targets scoring below
        neg_eq = (ge - gt) - (pos_ge - pos_gt)  # non-targets tied
        auc[lo : lo + len(rows)] = np.where(valid, neg_lt + 0.5 * neg_eq, 0).sum(axis=1) / (n_pos * n_neg)
        ap[lo : lo + len(rows)] = np.where(valid, pos_ge / ge, 0).sum(axis=1) / n_pos
    n_targets = np.array([len(hits[k]) for k in keep], dtype=int)
    return pd.DataFrame(
        {
            "compound": [compounds[k] for k in keep],
            "n_targets": n_targets,
            "auc": auc,
            "average_precision": ap,
            "random_average_precision": n_targets / len(genes),
        },
        columns=["compound", "n_targets", "auc", "average_precision", "random_average_precision"],
    )


def drug_similarity_score(compound_X, compounds: list[str], control_X, targets: dict[str, list[str]]) -> dict:
    """Median cosine distance between compounds sharing a target, against the median distance of
    compounds to the control profile. The ratio is < 1 when shared targets look alike."""
    C = _unit(compound_X)
    ctrl = _unit(np.atleast_2d(np.asarray(control_X, dtype=np.float64).mean(axis=0)))[0]
    i, j = shared_target_pairs(compounds, targets)
    step = 1 << 16  # pairs at a time: 1.4M pairs of 200-d profiles would be 4 GB gathered at once
    same = (
        np.concatenate(
            [1 - np.einsum("ij,ij->i", C[i[k : k + step]], C[j[k : k + step]]) for k in range(0, len(i), step)]
        )
        if len(i)
        else np.zeros(0)
    )
    to_ctrl = 1 - C @ ctrl
    if not len(same):
        return {
            "n_pairs": 0,
            "median_distance_shared_target": float("nan"),
            "median_distance_to_controls": float(np.median(to_ctrl)),
            "ratio": float("nan"),
        }
    a, b = float(np.median(same)), float(np.median(to_ctrl))
    return {"n_pairs": len(same), "median_distance_shared_target": a, "median_distance_to_controls": b, "ratio": a / b}


def shared_target_pairs(compounds: list[str], targets: dict[str, list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i < j) of compounds with a target in common, once: pairs within each target's
    compounds, deduplicated (never the all-pairs loop: 50k compounds are 1.25 billion pairs)."""
    by_target: dict[str, list[int]] = {}
    for k, comp in enumerate(compounds):
        for t in set(targets.get(comp, [])):
            by_target.setdefault(t, []).append(k)
    n = len(compounds)
    codes = [
        np.asarray(m)[a] * n + np.asarray(m)[b]
        for m in by_target.values()
        if len(m) > 1
        for a, b in [np.triu_indices(len(m), 1)]
    ]
    codes = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)
    return codes // n, codes % n
