"""Aligners: batch correction fitted on control wells, as scikit-learn estimators.

(Seven estimators and their base, a little over 400 lines: kept in one module so that what
an aligner is, and how each differs, reads in one place.)

Every aligner has `fit(X, batch, is_control)` (control rows only, per batch where the
method is per batch) and `transform(X, batch)`; parameters are validated in `fit`, an
unfitted `transform` is an error, and so is a matrix of another width.

`tvn` is efaar-benchmarking 1.0's `tvn_on_controls`, exactly (its definition, its
library calls). Whatever scales or whitens by control variance can be asked to scale
directions the controls do not span (fewer control wells than dimensions is the normal
case: 30 controls of 384-dim embeddings). The reference keeps its definition and warns;
every other aligner keeps only the components the controls support (at most controls - 1
overall, per batch where it is per batch, and none whose control variance is below `rtol`
of the largest) and records what it kept in `summary_`.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import AlignmentWarning, InputError
from . import ALIGNER_SUMMARIES

# chosen on a second simulator seed and untrained representations (benchmarks/alignment_choice.py, docs/map.md)
SUPPORT_RTOL = 1e-10  # a component whose control variance is below this fraction of the largest is numerical noise


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


def _controls_per_batch(batch, is_control, min_controls: int, method: str) -> dict[str, np.ndarray]:
    """Row masks of each batch's controls; a batch with fewer than `min_controls` is an error."""
    out = {}
    for b in np.unique(batch):
        rows = (batch == b) & is_control
        if rows.sum() < min_controls:
            raise InputError(f"batch '{b}' has {int(rows.sum())} control wells; {method} needs at least {min_controls}")
        out[b] = rows
    return out


def _inv_sqrt(cov: np.ndarray) -> np.ndarray:
    """cov^(-1/2) of a symmetric matrix."""
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    return (v / np.sqrt(np.clip(w, 1e-300, None))) @ v.T


def _supported(variances: np.ndarray, n_controls: int, rtol: float) -> int:
    """How many leading components (variances sorted descending) the controls support:
    at most n_controls - 1 (centred controls span no more), none below rtol of the largest."""
    if not len(variances) or variances[0] <= 0:
        return 0
    return int(min(np.sum(variances > rtol * variances[0]), max(n_controls - 1, 0)))


class Aligner(TransformerMixin, BaseEstimator):
    """Base: `fit` sets the fitted state (names ending in _) and `summary_`; `transform` applies it."""

    per_batch = False
    min_controls = 1  # per batch, for the per-batch methods; in all, otherwise
    name = ""
    keeps_features = False  # output column k is input feature k (no rotation, no reduction)

    def fit(self, X, batch, is_control) -> "Aligner":
        X, batch, is_control = _check(X, batch, is_control)
        self._validate_params()
        if self.per_batch:
            _controls_per_batch(batch, is_control, self.min_controls, self.name)
        elif is_control.sum() < self.min_controls:
            raise InputError(f"{int(is_control.sum())} control wells; {self.name} needs at least {self.min_controls}")
        self.n_features_in_ = X.shape[1]
        self.batches_ = sorted(set(batch))
        self.summary_ = {
            "method": self.name,
            "n_features_in": int(X.shape[1]),
            "n_controls": int(is_control.sum()),
            "controls_per_batch": {str(b): int(((batch == b) & is_control).sum()) for b in self.batches_},
            "warnings": [],
        }
        self._fit(X, batch, is_control)
        self.summary_.setdefault("n_components", int(self.n_components_out_))
        return self

    def transform(self, X, batch) -> np.ndarray:
        check_is_fitted(self, "summary_")
        X, batch, _ = _check(X, batch)
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"{X.shape[1]} dimensions; the aligner was fitted on {self.n_features_in_}")
        if self.per_batch:
            unknown = sorted(set(batch) - set(self.batches_))
            if unknown:
                raise InputError(f"batch '{unknown[0]}' was not seen when the aligner was fitted")
        return self._transform(X, batch)

    def fit_transform(self, X, batch, is_control) -> np.ndarray:
        return self.fit(X, batch, is_control).transform(X, batch)

    # subclasses
    def _validate_params(self) -> None:
        pass

    def _fit(self, X, batch, is_control) -> None:
        raise NotImplementedError

    def _transform(self, X, batch) -> np.ndarray:
        raise NotImplementedError

    def _note_truncation(self, k: int, d: int, n_controls: int, detail: str = "") -> None:
        """Record (and say, in one line) that only k of d directions are supported by the controls."""
        if k < d:
            self.summary_["dropped_components"] = int(d - k)
            self._warn(
                f"{self.name}: kept {k} of {d} dimensions, the components {n_controls} control wells{detail} support"
            )

    def _warn(self, message: str) -> None:
        self.summary_["warnings"].append(message)
        warnings.warn(message, AlignmentWarning, stacklevel=3)


class _PerBatchAffine(Aligner):
    """An aligner that ends as one affine map per batch, y = (x - center_b) @ M_b + c_b
    (params_[b] = (center_b, M_b, c_b); a 1-D M_b scales each dimension). Computed in float64
    after centering, whatever the input's precision: a matrix that divides by a small control
    variance has large entries, and x @ M + c would then cancel catastrophically in float32."""

    per_batch = True

    def _transform(self, X, batch):
        out = np.empty((X.shape[0], self.n_components_out_), X.dtype)
        for b in np.unique(batch):
            rows = np.flatnonzero(batch == b)
            center, M, c = self.params_[b]
            Z = X[rows].astype(np.float64) - center
            out[rows] = (Z * M if M.ndim == 1 else Z @ M) + c
        return out


def _scale_of(sd: np.ndarray, eps: float) -> np.ndarray:
    return np.where(sd > eps, sd, 1.0)


class NoAlign(Aligner):
    """Nothing."""

    name = "none"
    min_controls = 0
    keeps_features = True

    def _fit(self, X, batch, is_control):
        self.n_components_out_ = X.shape[1]

    def _transform(self, X, batch):
        return X


class CenterScale(_PerBatchAffine):
    """Per batch: subtract the controls' mean and divide by their standard deviation."""

    name = "center_scale"
    keeps_features = True

    def __init__(self, eps: float = 1e-8):
        self.eps = eps

    def _fit(self, X, batch, is_control):
        self.n_components_out_ = X.shape[1]
        self.params_ = {}
        for b, rows in _controls_per_batch(batch, is_control, self.min_controls, self.name).items():
            C = X[rows].astype(np.float64)
            sd = _scale_of(C.std(axis=0), self.eps) if len(C) > 1 else np.ones(C.shape[1])
            self.params_[b] = (C.mean(axis=0), 1 / sd, np.zeros(C.shape[1]))


class PCACenterScale(_PerBatchAffine):
    """PCA fitted on all controls (supported components only), then center-scale on controls per batch."""

    name = "pca_center_scale"
    min_controls = 2

    def __init__(self, n_components: int | None = None, rtol: float = SUPPORT_RTOL, eps: float = 1e-8):
        self.n_components = n_components
        self.rtol = rtol
        self.eps = eps

    def _validate_params(self):
        if self.n_components is not None and self.n_components < 1:
            raise InputError(f"pca_center_scale: n_components must be >= 1, got {self.n_components}")

    def _fit(self, X, batch, is_control):
        C = X[is_control].astype(np.float64)
        mu, comps, var = _pca(C)
        k = _supported(var, len(C), self.rtol)
        self._note_truncation(k, X.shape[1], len(C))
        if self.n_components is not None:
            k = min(k, self.n_components)
        R = comps[:k].T  # d x k
        self.n_components_out_ = k
        self.params_ = {}
        for b, rows in _controls_per_batch(batch, is_control, self.min_controls, self.name).items():
            Cb = X[rows].astype(np.float64)
            P = (Cb - mu) @ R
            m, sd = P.mean(axis=0), _scale_of(P.std(axis=0), self.eps)
            mu_b = Cb.mean(
                axis=0
            )  # centre on the batch's controls first: (x - mu) @ R - m = (x - mu_b) @ R + ((mu_b - mu) @ R - m)
            self.params_[b] = (mu_b, R / sd, ((mu_b - mu) @ R - m) / sd)


def _pca(C: np.ndarray):
    """Mean, components (rows, by decreasing variance) and variances of the controls C."""
    mu = C.mean(axis=0)
    _, s, vt = np.linalg.svd(C - mu, full_matrices=False)
    return mu, vt, s**2 / max(len(C) - 1, 1)


class TVN(_PerBatchAffine):
    """Typical variation normalization exactly as efaar-benchmarking 1.0 `tvn_on_controls`:

    1. center-scale on all control wells together (StandardScaler); 2. PCA fitted on the
    controls, every component kept; 3. center-scale on all controls again; 4. per batch,
    multiply by (cov(controls of the batch) + reg I)^(-1/2), reg = 0.5. It keeps its
    definition when the controls do not support every component, and warns.
    """

    name = "tvn"
    min_controls = 2

    def __init__(self, reg: float = 0.5):
        self.reg = reg

    def _validate_params(self):
        if self.reg < 0:
            raise InputError(f"tvn: reg must be >= 0, got {self.reg}")

    def _fit(self, X, batch, is_control):
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        C = X[is_control].astype(np.float64)
        s1 = StandardScaler().fit(C)
        pca = PCA().fit(s1.transform(C))
        s2 = StandardScaler().fit(pca.transform(s1.transform(C)))
        # steps 1-3 as one affine map after the first centring: q = (x - mean_1) @ A + a
        A = (pca.components_.T / s1.scale_[:, None]) / s2.scale_
        a = (-pca.mean_ @ pca.components_.T - s2.mean_) / s2.scale_
        k = A.shape[1]
        self.n_components_out_ = k
        supported = _supported(pca.explained_variance_, len(C), SUPPORT_RTOL)
        self.summary_["supported_components"] = supported
        if supported < k:
            self._warn(
                f"tvn: {len(C)} control wells of {X.shape[1]} dimensions support {supported} of the {k} components the reference keeps "
                "and scales by their numerical noise (tvn_per_batch, pca_center_scale and sphering keep only supported components)"
            )
        self.params_ = {}
        small = []
        for b, rows in _controls_per_batch(batch, is_control, self.min_controls, self.name).items():
            Q = (X[rows].astype(np.float64) - s1.mean_) @ A + a
            W = _inv_sqrt(np.cov(Q, rowvar=False, ddof=1).reshape(k, k) + self.reg * np.eye(k))
            self.params_[b] = (s1.mean_, A @ W, a @ W)
            if rows.sum() < k:
                small.append(f"'{b}' ({int(rows.sum())})")
        if small:
            self._warn(
                f"tvn: {len(small)} of {len(self.params_)} batches have fewer control wells than the {k} components "
                f"(first: {small[0]}): their covariance is regularized by {self.reg} I alone"
            )


class TVNPerBatch(_PerBatchAffine):
    """TVN with center-scaling per batch (steps 1 and 3), on the components every batch's
    controls support: at most min(controls - 1, controls per batch - 1) of them."""

    name = "tvn_per_batch"
    min_controls = 2

    def __init__(self, reg: float = 0.5, rtol: float = SUPPORT_RTOL, eps: float = 1e-8):
        self.reg = reg
        self.rtol = rtol
        self.eps = eps

    def _validate_params(self):
        if self.reg < 0:
            raise InputError(f"tvn_per_batch: reg must be >= 0, got {self.reg}")

    def _fit(self, X, batch, is_control):
        cs1 = CenterScale(self.eps).fit(X, batch, is_control)
        Z = cs1.transform(X[is_control], batch[is_control]).astype(np.float64)
        mu, comps, var = _pca(Z)
        per_batch = _controls_per_batch(batch, is_control, self.min_controls, self.name)
        smallest = min(int(r.sum()) for r in per_batch.values())
        k = min(_supported(var, len(Z), self.rtol), smallest - 1)
        self._note_truncation(k, X.shape[1], len(Z), f" ({smallest} in the smallest batch)")
        R = comps[:k].T
        self.n_components_out_ = k
        self.params_ = {}
        for b, rows in per_batch.items():
            mu_b, inv_sd, _ = cs1.params_[b]
            M, c = R * inv_sd[:, None], -mu @ R  # steps 1-2 for this batch: (x - mu_b) @ M + c
            Q = (X[rows].astype(np.float64) - mu_b) @ M + c
            m, sd = Q.mean(axis=0), _scale_of(Q.std(axis=0), self.eps)
            M, c = M / sd, (c - m) / sd  # step 3
            W = _inv_sqrt(np.cov((Q - m) / sd, rowvar=False, ddof=1).reshape(k, k) + self.reg * np.eye(k))
            self.params_[b] = (mu_b, M @ W, c @ W)


class Sphering(Aligner):
    """ZCA whitening fitted on all controls, (x - mu) @ (cov + epsilon * mean eigenvalue * I)^(-1/2),
    over the directions the controls support (others map to 0)."""

    name = "sphering"
    min_controls = 2

    def __init__(self, epsilon: float = 1e-3, rtol: float = SUPPORT_RTOL):
        self.epsilon = epsilon
        self.rtol = rtol

    def _validate_params(self):
        if self.epsilon <= 0:
            raise InputError(f"sphering: epsilon must be > 0, got {self.epsilon}")

    def _fit(self, X, batch, is_control):
        C = X[is_control].astype(np.float64)
        self.mu_ = C.mean(axis=0)
        cov = np.cov(C, rowvar=False).reshape(X.shape[1], X.shape[1])
        w, v = np.linalg.eigh((cov + cov.T) / 2)
        order = np.argsort(w)[::-1]
        w, v = w[order], v[:, order]
        k = _supported(w, len(C), self.rtol)
        self._note_truncation(k, X.shape[1], len(C))
        reg = self.epsilon * (w[:k].mean() if k else 1.0)
        self.W_ = (v[:, :k] / np.sqrt(w[:k] + reg)) @ v[:, :k].T
        self.n_components_out_ = X.shape[1]
        self.summary_["n_components"] = k

    def _transform(self, X, batch):
        return (X - self.mu_.astype(X.dtype)) @ self.W_.astype(X.dtype)


class Harmony(Aligner):
    """Harmony (harmonypy) on control-anchored PCA scores (pca_center_scale, 50 components).

    Harmony corrects all rows jointly: it offers `fit_transform` only.
    """

    name = "harmony"
    per_batch = True
    min_controls = 2

    def __init__(self, n_components: int = 50, seed: int = 0, max_iter: int = 20):
        self.n_components = n_components
        self.seed = seed
        self.max_iter = max_iter

    def _validate_params(self):
        if self.n_components < 1 or self.max_iter < 1:
            raise InputError("harmony: n_components and max_iter must be >= 1")

    def _fit(self, X, batch, is_control):
        self.pca_ = PCACenterScale(n_components=self.n_components).fit(X, batch, is_control)
        self.n_components_out_ = self.pca_.n_components_out_

    def transform(self, X, batch):
        raise InputError("Harmony corrects the rows it is fitted on together: call fit_transform")

    def fit_transform(self, X, batch, is_control):
        import harmonypy
        import pandas as pd

        self.fit(X, batch, is_control)
        X, batch, _ = _check(X, batch)
        Z = self.pca_.transform(X, batch)
        ho = harmonypy.run_harmony(
            Z,
            pd.DataFrame({"batch": batch}),
            ["batch"],
            random_state=self.seed,
            max_iter_harmony=self.max_iter,
            verbose=False,
        )
        out = np.asarray(ho.Z_corr)
        return out.T if out.shape[0] != X.shape[0] else out


ALIGNERS: dict[str, type[Aligner]] = {
    cls.name: cls for cls in (TVNPerBatch, TVN, Sphering, PCACenterScale, CenterScale, Harmony, NoAlign)
}
if list(ALIGNERS) != list(ALIGNER_SUMMARIES):
    raise ImportError(
        f"maps/__init__.py ALIGNER_SUMMARIES {list(ALIGNER_SUMMARIES)} and maps/align.py ALIGNERS {list(ALIGNERS)} differ"
    )


def make_aligner(name: str, **params) -> Aligner:
    if name not in ALIGNERS:
        raise InputError(f"unknown alignment '{name}'; choose one of {', '.join(ALIGNERS)}")
    return ALIGNERS[name](**params)
