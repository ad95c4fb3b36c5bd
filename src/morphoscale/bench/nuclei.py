"""How much of CellProfiler's per-nucleus measurements an embedding holds: embeddings of crops
centred on each nucleus predict its real features (area, DNA intensity, DNA texture) by ridge
regression, scored by cross-validated R2. For a real field with no perturbations, where the
map benchmarks do not apply."""

from __future__ import annotations

import numpy as np
import pandas as pd

# CellProfiler Nuclei.csv columns, and whether to model their logarithm (positive, skewed)
TARGETS = {
    "AreaShape_Area": True,
    "Intensity_IntegratedIntensity_DNA": True,
    "Intensity_MeanIntensity_DNA": True,
    "Texture_Contrast_DNA_3_00_256": True,
    "Texture_AngularSecondMoment_DNA_3_00_256": True,
}


def nucleus_crops(site: np.ndarray, centers_xy: np.ndarray, size: int) -> np.ndarray:
    """(n, C, size, size) crops centred on each nucleus; the field is mirrored at its borders."""
    half = size // 2
    padded = np.pad(site, ((0, 0), (half, half), (half, half)), mode="reflect")
    out = np.empty((len(centers_xy), site.shape[0], size, size), site.dtype)
    for k, (x, y) in enumerate(np.rint(centers_xy).astype(int)):
        y = int(np.clip(y, 0, site.shape[1] - 1))
        x = int(np.clip(x, 0, site.shape[2] - 1))
        out[k] = padded[:, y : y + size, x : x + size]
    return out


def embed_crops(model, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The model's embedding of each crop, self-standardized as in training and embedding."""
    import torch

    from ..data.transforms import self_standardize

    out = []
    with torch.inference_mode():
        for a in range(0, len(crops), batch_size):
            x = self_standardize(torch.from_numpy(crops[a : a + batch_size].astype(np.float32)))
            out.append(model.embed(x, pooling=model.default_pooling).float().numpy())
    return np.concatenate(out)


def pixel_features(crops: np.ndarray, side: int = 16) -> np.ndarray:
    """The raw-pixel baseline: each crop block-averaged to side x side per channel, intensities kept."""
    n, c, h, w = crops.shape
    f = h // side
    x = crops[:, :, : side * f, : side * f].astype(np.float32).reshape(n, c, side, f, side, f).mean(axis=(3, 5))
    return x.reshape(n, -1)


def cv_r2(X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[float, float]:
    """Mean and sd over folds of the R2 of a ridge regression (penalty chosen inside each
    training fold), on standardized, PCA-reduced features so that wide embeddings and few
    nuclei do not make the fit degenerate."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(min(32, X.shape[1], len(y) * (folds - 1) // folds - 1))
    model = make_pipeline(StandardScaler(), PCA(n_components=k, random_state=seed), RidgeCV(alphas=np.logspace(-3, 4, 15)))
    scores = cross_val_score(model, X, y, cv=KFold(folds, shuffle=True, random_state=seed), scoring="r2")
    return float(scores.mean()), float(scores.std())


def probe_table(embeddings: dict[str, np.ndarray], nuclei: pd.DataFrame, folds: int = 5, seed: int = 0) -> pd.DataFrame:
    rows = []
    for target, log in TARGETS.items():
        if target not in nuclei.columns:
            continue
        y = nuclei[target].to_numpy(np.float64)
        if log:
            y = np.log(np.maximum(y, 1e-12))
        for name, X in embeddings.items():
            m, s = cv_r2(X, y, folds, seed)
            rows.append({"target": target + (" (log)" if log else ""), "embedding": name, "r2": m, "r2_sd": s, "dims": X.shape[1], "nuclei": len(y)})
    return pd.DataFrame(rows)
