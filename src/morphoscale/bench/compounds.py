"""Compounds against genes: target retrieval and the MIDL 2022 drug-drug similarity score."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from ..errors import InputError


def read_targets(path) -> dict[str, list[str]]:
    """CSV with columns compound,target (one row per compound-target pair)."""
    df = pd.read_csv(path, dtype=str)
    missing = [c for c in ("compound", "target") if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (expected compound,target)")
    return {c: sorted(set(g["target"])) for c, g in df.dropna().groupby("compound")}


def _unit(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def compound_gene_retrieval(compound_X, compounds: list[str], gene_X, genes: list[str], targets: dict[str, list[str]]) -> pd.DataFrame:
    """For each compound with a target in the map: rank every gene by cosine to the compound;
    ROC-AUC and average precision of its annotated targets. Random: AUC 0.5, AP = targets / genes."""
    C, G = _unit(compound_X), _unit(gene_X)
    gene_set = {g: i for i, g in enumerate(genes)}
    rows = []
    for k, comp in enumerate(compounds):
        tg = [t for t in targets.get(comp, []) if t in gene_set]
        if not tg or len(tg) == len(genes):
            continue
        y = np.zeros(len(genes), bool)
        y[[gene_set[t] for t in tg]] = True
        score = G @ C[k]
        rows.append({"compound": comp, "n_targets": len(tg), "auc": float(roc_auc_score(y, score)), "average_precision": float(average_precision_score(y, score)),
                     "random_average_precision": len(tg) / len(genes)})
    return pd.DataFrame(rows, columns=["compound", "n_targets", "auc", "average_precision", "random_average_precision"])


def drug_similarity_score(compound_X, compounds: list[str], control_X, targets: dict[str, list[str]]) -> dict:
    """Median cosine distance between compounds sharing a target, against the median distance of
    compounds to the control profile. The ratio is < 1 when shared targets look alike."""
    C = _unit(compound_X)
    ctrl = _unit(np.atleast_2d(np.asarray(control_X, dtype=np.float64).mean(axis=0)))[0]
    i, j = shared_target_pairs(compounds, targets)
    same = 1 - np.einsum("ij,ij->i", C[i], C[j]) if len(i) else np.zeros(0)
    to_ctrl = 1 - C @ ctrl
    if not len(same):
        return {"n_pairs": 0, "median_distance_shared_target": float("nan"), "median_distance_to_controls": float(np.median(to_ctrl)), "ratio": float("nan")}
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
    codes = [np.asarray(m)[a] * n + np.asarray(m)[b] for m in by_target.values() if len(m) > 1 for a, b in [np.triu_indices(len(m), 1)]]
    codes = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)
    return codes // n, codes % n
