"""Probes along training: does what the model learns help tell biology apart?

At step 0 (the untrained weights: the floor) and every `probe_every` steps, a fixed subset
of sites is embedded exactly as `embed` would (every tile at the crop size, the model's
default readout, the mean over a site's tiles) and three cheap readings go to metrics.csv
beside the loss:

- `probe/knn_perturbation`: which treated perturbation a site shows, by a 5-nearest-
  neighbour vote (cosine, features standardized over the subset) among the treated sites
  of *other wells* (a site's own well would make it a lookup); chance: `probe/knn_chance`;
  with `probe_label: COLUMN`, the same vote for a site-table column the user names, over
  every site of the subset (`probe/knn_<column>`, chance `probe/knn_<column>_chance`);
- `probe/logistic_control`: balanced accuracy of a logistic regression telling treated
  from control sites, 5-fold cross-validated with folds grouped by well (chance 0.5);
- `probe/decoding_r2` (simulated screens, `probe_truth`): R2 of a ridge regression from
  site embeddings to the well's true morphology parameters, folds grouped by well, mean
  over parameters (chance 0). A site-level trend on a subset, not the bench's number.

The subset: up to `probe_sites` sites, half from control wells and half from whole treated
perturbations (all their sites, perturbations in a seeded order), so the kNN vote has
replicates to find. Probing costs a forward pass over the subset; its time is logged
(`probe/seconds`) so the share of training it takes can be read off.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from ..errors import InputError


def probe_subset(sites: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Row indices of the subset (see the module docstring), sorted."""
    rng = np.random.default_rng(seed)
    is_control = sites["is_control"].to_numpy(bool)
    perts = sites["perturbation"].astype(str).to_numpy()
    chosen = list(rng.permutation(np.flatnonzero(is_control))[: n // 2])
    for p in rng.permutation(np.unique(perts[~is_control])):
        rows = np.flatnonzero(perts == p)
        if len(chosen) + len(rows) > n and len(chosen) >= n // 2 + 2:
            break
        chosen += list(rows)
    return np.sort(np.asarray(chosen, dtype=np.int64))


def knn_accuracy(X: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Leave-one-group-out k-NN vote accuracy (cosine), and its chance (the label frequencies)."""
    Z = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    S = Z @ Z.T
    S[groups[:, None] == groups[None, :]] = -np.inf
    hits = 0
    for i in range(len(X)):
        nn = np.argsort(-S[i])[:k]
        nn = nn[np.isfinite(S[i, nn])]
        if not len(nn):
            continue
        vals, counts = np.unique(labels[nn], return_counts=True)
        hits += vals[np.argmax(counts)] == labels[i]
    freq = pd.Series(labels).value_counts(normalize=True).to_numpy()
    return hits / len(X), float((freq**2).sum())


def grouped_cv(model, X: np.ndarray, y: np.ndarray, groups: np.ndarray, score, folds: int = 5) -> float:
    from sklearn.model_selection import GroupKFold

    folds = min(folds, len(np.unique(groups)))
    pred = np.zeros_like(y, dtype=float)
    for tr, te in GroupKFold(n_splits=folds).split(X, y, groups):
        pred[te] = model.fit(X[tr], y[tr]).predict(X[te])
    return float(score(y, pred))


def standardize(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(0)) / (X.std(0) + 1e-6)


class ProbeSet:
    """The fixed subset: its tiles (read once), labels, wells and, when given, the truth."""

    def __init__(
        self,
        store,
        crop: int,
        channels: list[str],
        n_sites: int,
        seed: int,
        truth: Path | None = None,
        label: str | None = None,
    ):
        from ..data.datasets import TileDataset

        sites = store.sites
        self.rows = probe_subset(sites, n_sites, seed)
        tiles = TileDataset(store, crop, channels=channels, sites=self.rows)
        self.tiles_per_site = tiles.tiles_per_site
        self.images = torch.stack([tiles[i]["image"] for i in range(len(tiles))])
        s = sites.iloc[self.rows]
        self.is_control = s["is_control"].to_numpy(bool)
        self.perturbation = s["perturbation"].astype(str).to_numpy()
        self.well = (s["plate"].astype(str) + "/" + s["well"].astype(str)).to_numpy()
        if label is not None and label not in sites.columns:
            raise InputError(
                f"key 'probe_label': '{label}' is not a column of the store's site table ({', '.join(map(str, sites.columns[:12]))}, ...)"
            )
        self.label_name = label
        self.label = s[label].astype(str).to_numpy() if label else None
        self.truth = self._truth(s, truth) if truth else None

    @staticmethod
    def _truth(s: pd.DataFrame, folder: Path) -> np.ndarray | None:
        from ..simulate.oracle import read_truth

        wells, _, params = read_truth(folder)
        key = wells.set_index("_key")[params]  # experiment_plate_well; a store's plate is experiment_plate
        idx = (s["plate"].astype(str) + "_" + s["well"].astype(str)).tolist()
        if any(i not in key.index for i in idx):
            raise InputError(f"{folder}: the ground truth does not cover the store's wells (key 'probe_truth')")
        return key.loc[idx].to_numpy(float)

    @torch.no_grad()
    def embed(self, model, batch_size: int = 128) -> np.ndarray:
        device = next(model.parameters()).device
        out = [
            model.embed(self.images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(self.images), batch_size)
        ]
        E = torch.cat(out).numpy()
        return E.reshape(len(self.rows), self.tiles_per_site, -1).mean(1)

    def measure(self, model) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression, RidgeCV
        from sklearn.metrics import balanced_accuracy_score, r2_score

        X = standardize(self.embed(model).astype(np.float64))
        out = {}
        t = ~self.is_control
        if len(np.unique(self.perturbation[t])) > 1:
            out["knn_perturbation"], out["knn_chance"] = knn_accuracy(X[t], self.perturbation[t], self.well[t])
        if self.label is not None and len(np.unique(self.label)) > 1:
            out[f"knn_{self.label_name}"], out[f"knn_{self.label_name}_chance"] = knn_accuracy(X, self.label, self.well)
        if self.is_control.any() and t.any():
            out["logistic_control"] = grouped_cv(
                LogisticRegression(max_iter=500, C=0.1, class_weight="balanced"),
                X,
                self.is_control.astype(int),
                self.well,
                balanced_accuracy_score,
            )
        if self.truth is not None:
            Y = standardize(self.truth)
            out["decoding_r2"] = grouped_cv(
                RidgeCV(alphas=np.logspace(-1, 4, 11)),
                X,
                Y,
                self.well,
                lambda y, p: np.mean([r2_score(y[:, j], p[:, j]) for j in range(y.shape[1])]),
            )
        return out


class Probes(L.Callback):
    """Probes the model at step 0 and every `every` steps (and at the last); logs probe/*."""

    def __init__(self, probe_set: ProbeSet, every: int):
        self.set = probe_set
        self.every = every

    def _probe(self, trainer, pl_module) -> None:
        t0 = time.perf_counter()
        was_training = pl_module.training
        pl_module.eval()
        try:
            values = self.set.measure(pl_module.model)
        finally:
            pl_module.train(was_training)
        values["seconds"] = time.perf_counter() - t0
        if trainer.is_global_zero:  # straight to the loggers: one row at this step, not repeated at every later one
            for logger in trainer.loggers:
                logger.log_metrics({f"probe/{k}": float(v) for k, v in values.items()}, step=trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:  # the untrained weights: the floor every later probe is read against
            self._probe(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            self._probe(trainer, pl_module)
