"""The MIDL 2022 downstream tasks, corrected: drug-vs-control probes with a split grouped by
plate (the reference split tiles of one image across train and test), scores from
probabilities; clustering scores computed on the embeddings, not on the 2-D projection."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    f1_score,
    roc_auc_score,
    silhouette_score,
)
from sklearn.model_selection import GroupKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import InputError


def drug_vs_control(
    X: np.ndarray,
    obs: pd.DataFrame,
    group_column: str = "plate",
    n_splits: int = 5,
    seed: int = 0,
    max_wells: int = 20000,
) -> pd.DataFrame:
    """Compound wells vs control wells, linear and MLP probes, cross-validated with folds grouped
    by `group_column`. Returns one row per probe: accuracy, F1, ROC-AUC, and the majority-class accuracy.

    A screen with more than `max_wells` compound and control wells keeps every control well and a
    seeded sample of the compound wells (n_wells: the wells probed, n_compound_wells: all of them):
    a 100k-well compound screen would otherwise spend minutes in the MLP for the same answer."""
    if group_column not in obs.columns:
        raise InputError(f"the embeddings have no '{group_column}' column to group the split by")
    is_cpd = (obs["perturbation_type"].astype(str) == "compound").to_numpy() & ~obs["is_control"].to_numpy(bool)
    mask = obs["is_control"].to_numpy(bool) | is_cpd
    n_compound_wells = int(is_cpd.sum())
    room = max_wells - int(obs["is_control"].to_numpy(bool).sum())
    if n_compound_wells > max(room, 0) and room > 0:
        keep = np.random.default_rng(seed).choice(np.flatnonzero(is_cpd), room, replace=False)
        mask &= ~is_cpd
        mask[keep] = True
    Xm, y = np.asarray(X, dtype=np.float64)[mask], (~obs["is_control"].to_numpy(bool))[mask].astype(int)
    groups = obs[group_column].astype(str).to_numpy()[mask]
    n_groups = len(np.unique(groups))
    if y.min() == y.max():
        raise InputError("drug-vs-control needs both compound and control wells")
    if n_groups < 2:
        raise InputError(f"drug-vs-control needs at least 2 distinct '{group_column}' values for a grouped split")
    probes = {
        "linear": lambda n: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)),
        # early stopping holds out 10% of the training wells, stratified: only where that leaves both classes
        "mlp": lambda n: make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(128,), max_iter=500, early_stopping=n >= 50, random_state=seed),
        ),
    }
    rows = []
    for name, make in probes.items():
        proba = np.zeros(len(y))
        for train, test in GroupKFold(n_splits=min(n_splits, n_groups)).split(Xm, y, groups):
            if len(np.unique(y[train])) < 2:
                proba[test] = y[train].mean()
                continue
            proba[test] = make(len(train)).fit(Xm[train], y[train]).predict_proba(Xm[test])[:, 1]
        pred = (proba >= 0.5).astype(int)
        rows.append(
            {
                "probe": name,
                "accuracy": accuracy_score(y, pred),
                "f1": f1_score(y, pred),
                "roc_auc": roc_auc_score(y, proba),
                "majority_accuracy": max(y.mean(), 1 - y.mean()),
                "n_wells": int(len(y)),
                "n_compound_wells": n_compound_wells,
                "n_groups": n_groups,
            }
        )
    return pd.DataFrame(rows)


def cluster_scores(
    X: np.ndarray, obs: pd.DataFrame, by: str | None = "cell_type", min_cluster_size: int = 10, seed: int = 0
) -> pd.DataFrame:
    """UMAP (2-D) then HDBSCAN, within each cell line; silhouette, Calinski-Harabasz and
    Davies-Bouldin of those clusters computed on the embeddings themselves (noise excluded)."""
    import umap
    from sklearn.cluster import HDBSCAN

    X = np.asarray(X, dtype=np.float64)
    parts = (
        [("all", np.arange(len(X)))]
        if by is None or by not in obs.columns
        else [
            (str(k), np.flatnonzero(obs[by].astype(str).to_numpy() == k)) for k in sorted(obs[by].astype(str).unique())
        ]
    )
    rows = []
    for name, idx in parts:
        if len(idx) < max(3 * min_cluster_size, 15):
            continue
        emb2 = umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(X[idx])
        labels = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(emb2)
        keep = labels >= 0
        k = len(np.unique(labels[keep]))
        row = {"group": name, "n": len(idx), "n_clusters": k, "noise_fraction": float(1 - keep.mean())}
        if k >= 2:
            row.update(
                silhouette=silhouette_score(X[idx][keep], labels[keep], metric="cosine"),
                calinski_harabasz=calinski_harabasz_score(X[idx][keep], labels[keep]),
                davies_bouldin=davies_bouldin_score(X[idx][keep], labels[keep]),
            )
        rows.append(row)
    return pd.DataFrame(rows)
