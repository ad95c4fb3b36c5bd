"""Aligners: batch correction fitted on control wells, scikit-learn style.

Every aligner has `fit(X, batch, is_control)` (uses control rows only, per batch
where the method is per batch) and `transform(X, batch)`. A batch without
controls is an error for the methods that need them.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def _check(X, batch, is_control=None):
    # float32 embeddings stay float32 (half the memory traffic at genome scale); anything else is float64
    X = np.asarray(X)
    X = X.astype(np.float32 if X.dtype == np.float32 else np.float64, copy=False)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"embedding matrix must be 2-D and non-empty, got shape {X.shape}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise InputError(f"embedding matrix has {bad} rows with NaN or infinite values")
    batch = np.asarray(batch).astype(str)
    if batch.shape[0] != X.shape[0]:
        raise InputError(f"{batch.shape[0]} batch labels for {X.shape[0]} rows")
    if is_control is not None:
        is_control = np.asarray(is_control, dtype=bool)
        if is_control.shape[0] != X.shape[0]:
            raise InputError(f"{is_control.shape[0]} control flags for {X.shape[0]} rows")
    return X, batch, is_control


def _controls_per_batch(X, batch, is_control, min_controls=1):
    out = {}
    for b in np.unique(batch):
        rows = (batch == b) & is_control
        if rows.sum() < min_controls:
            raise InputError(f"batch '{b}' has {int(rows.sum())} control wells; the aligner needs at least {min_controls}")
        out[b] = X[rows]
    return out


def _center_scale_params(C: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    mu = C.mean(axis=0)
    sd = C.std(axis=0) if len(C) > 1 else np.ones(C.shape[1])
    return mu, np.where(sd > eps, sd, 1.0)


class Aligner:
    """Base: subclasses set fitted state in `fit` and apply it in `transform`."""

    per_batch = False

    def fit(self, X, batch, is_control) -> "Aligner":
        raise NotImplementedError

    def transform(self, X, batch) -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, X, batch, is_control) -> np.ndarray:
        return self.fit(X, batch, is_control).transform(X, batch)

    def _batch_params(self, batch):
        unknown = sorted(set(np.asarray(batch).astype(str)) - set(self.params_))
        if unknown:
            raise InputError(f"batch '{unknown[0]}' was not seen when the aligner was fitted")


class NoAlign(Aligner):
    def fit(self, X, batch, is_control):
        _check(X, batch, is_control)
        return self

    def transform(self, X, batch):
        X, _, _ = _check(X, batch)
        return X


class CenterScale(Aligner):
    """Per batch: subtract the controls' mean and divide by their standard deviation."""

    per_batch = True

    def __init__(self, eps: float = 1e-8):
        self.eps = eps

    def fit(self, X, batch, is_control):
        X, batch, is_control = _check(X, batch, is_control)
        self.params_ = {b: _center_scale_params(C, self.eps) for b, C in _controls_per_batch(X, batch, is_control).items()}
        return self

    def transform(self, X, batch):
        X, batch, _ = _check(X, batch)
        self._batch_params(batch)
        names, codes = np.unique(batch, return_inverse=True)
        mu = np.stack([self.params_[b][0] for b in names]).astype(X.dtype)
        sd = np.stack([self.params_[b][1] for b in names]).astype(X.dtype)
        out = X - mu[codes]
        out /= sd[codes]
        return out


class PCACenterScale(Aligner):
    """PCA fitted on all controls (whitening off), then center-scale on controls per batch."""

    per_batch = True

    def __init__(self, n_components: int | float | None = None, eps: float = 1e-8):
        self.n_components = n_components
        self.eps = eps

    def fit(self, X, batch, is_control):
        from sklearn.decomposition import PCA

        X, batch, is_control = _check(X, batch, is_control)
        if is_control.sum() < 2:
            raise InputError("PCA needs at least 2 control wells")
        self.pca_ = PCA(n_components=self.n_components, svd_solver="full").fit(X[is_control])
        self.cs_ = CenterScale(self.eps).fit(self.pca_.transform(X), batch, is_control)
        self.params_ = self.cs_.params_
        return self

    def transform(self, X, batch):
        X, batch, _ = _check(X, batch)
        return self.cs_.transform(self.pca_.transform(X), batch)


def _inv_sqrt(cov: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    w = np.clip(w, 1e-12, None)
    return (v / np.sqrt(w)) @ v.T


class TVN(Aligner):
    """Typical variation normalization (Ando et al. 2017), as in the MAE paper's maps.

    1. center-scale on the controls of each batch; 2. PCA fitted on all controls, every
    component kept; 3. center-scale on the controls of each batch again; 4. per batch,
    multiply by (cov(controls of the batch) + reg * I)^(-1/2), reg = 0.5 by default.
    """

    per_batch = True

    def __init__(self, reg: float = 0.5, eps: float = 1e-8):
        if reg < 0:
            raise ValueError("reg must be >= 0")
        self.reg = reg
        self.eps = eps

    def fit(self, X, batch, is_control):
        from sklearn.decomposition import PCA

        X, batch, is_control = _check(X, batch, is_control)
        if is_control.sum() < 2:
            raise InputError("TVN needs at least 2 control wells")
        self.cs1_ = CenterScale(self.eps).fit(X, batch, is_control)
        Z = self.cs1_.transform(X, batch)
        self.pca_ = PCA(n_components=min(int(is_control.sum()), X.shape[1]), svd_solver="full").fit(Z[is_control])
        P = self.pca_.transform(Z)
        self.cs2_ = CenterScale(self.eps).fit(P, batch, is_control)
        Q = self.cs2_.transform(P, batch)
        d = Q.shape[1]
        self.params_ = {}
        for b in self.cs1_.params_:
            Cb = Q[(batch == b) & is_control]
            cov = np.cov(Cb, rowvar=False) if len(Cb) > 1 else np.zeros((d, d))
            self.params_[b] = _inv_sqrt(np.atleast_2d(cov) + self.reg * np.eye(d))
        return self

    def transform(self, X, batch):
        X, batch, _ = _check(X, batch)
        self._batch_params(batch)
        Q = self.cs2_.transform(self.pca_.transform(self.cs1_.transform(X, batch)), batch)
        out = np.empty_like(Q)
        for b in np.unique(batch):
            rows = np.flatnonzero(batch == b)
            out[rows] = Q[rows] @ self.params_[b].astype(Q.dtype)
        return out


class Sphering(Aligner):
    """ZCA whitening fitted on all controls: (x - mu) @ (cov + eps I)^(-1/2)."""

    def __init__(self, epsilon: float = 1e-3):
        if epsilon <= 0:
            raise ValueError("epsilon must be > 0")
        self.epsilon = epsilon

    def fit(self, X, batch, is_control):
        X, batch, is_control = _check(X, batch, is_control)
        C = X[is_control]
        if len(C) < 2:
            raise InputError("sphering needs at least 2 control wells")
        self.mu_ = C.mean(axis=0)
        self.W_ = _inv_sqrt(np.cov(C, rowvar=False) + self.epsilon * np.eye(X.shape[1]))
        return self

    def transform(self, X, batch):
        X, _, _ = _check(X, batch)
        return (X - self.mu_) @ self.W_


class Harmony(Aligner):
    """Harmony (harmonypy) on PCA scores; controls anchor the PCA and the centering.

    Harmony corrects all rows jointly, so `transform` must see the rows it was fitted on.
    """

    def __init__(self, n_components: int = 50, seed: int = 0, max_iter: int = 20):
        self.n_components = n_components
        self.seed = seed
        self.max_iter = max_iter

    def fit(self, X, batch, is_control):
        X, batch, is_control = _check(X, batch, is_control)
        _controls_per_batch(X, batch, is_control)
        self.fitted_rows_ = X.shape[0]
        self.pca_ = PCACenterScale(n_components=min(self.n_components, X.shape[1], max(1, int(is_control.sum()) - 1))).fit(X, batch, is_control)
        return self

    def transform(self, X, batch):
        import harmonypy
        import pandas as pd

        X, batch, _ = _check(X, batch)
        if X.shape[0] != self.fitted_rows_:
            raise InputError("Harmony transforms the rows it was fitted on; call fit_transform")
        Z = self.pca_.transform(X, batch)
        meta = pd.DataFrame({"batch": batch})
        ho = harmonypy.run_harmony(Z, meta, ["batch"], random_state=self.seed, max_iter_harmony=self.max_iter, verbose=False)
        out = np.asarray(ho.Z_corr)
        return out.T if out.shape[0] != X.shape[0] else out


ALIGNERS = {
    "none": NoAlign,
    "center_scale": CenterScale,
    "pca_center_scale": PCACenterScale,
    "tvn": TVN,
    "sphering": Sphering,
    "harmony": Harmony,
}


def make_aligner(name: str, **params) -> Aligner:
    if name not in ALIGNERS:
        raise InputError(f"unknown alignment '{name}'; choose one of {', '.join(ALIGNERS)}")
    return ALIGNERS[name](**params)
