"""How much of CellProfiler's per-nucleus measurements an embedding holds: embeddings of crops
centred on each nucleus predict its real features (area, DNA intensity, DNA texture) by ridge
regression, scored by cross-validated R2. For a real field with no perturbations, where the
map benchmarks do not apply. Masked models also reconstruct crops from the part of the field
their training never cropped (TrainConfig.holdout_width)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

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
    model = make_pipeline(
        StandardScaler(), PCA(n_components=k, random_state=seed), RidgeCV(alphas=np.logspace(-3, 4, 15))
    )
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
            rows.append(
                {
                    "target": target + (" (log)" if log else ""),
                    "embedding": name,
                    "r2": m,
                    "r2_sd": s,
                    "dims": X.shape[1],
                    "nuclei": len(y),
                }
            )
    return pd.DataFrame(rows)


def heldout_reconstructions(
    model, site: np.ndarray, centers_xy: np.ndarray, size: int, holdout_width: float, n: int = 4, seed: int = 0
) -> np.ndarray | None:
    """Panels (masked | reconstruction | target per crop, one row per channel) of crops centred
    on nuclei wholly inside the held-out right side of the field, as an (H, W) uint8 image."""
    import torch

    from ..data.transforms import self_standardize
    from ..models.masked import MaskedReconstruction, reconstruction_images

    if not isinstance(model, MaskedReconstruction):
        return None
    w = site.shape[2]
    x0 = w * (1 - holdout_width) + size / 2
    inside = centers_xy[(centers_xy[:, 0] >= x0) & (centers_xy[:, 0] <= w - size / 2)]
    if holdout_width <= 0 or not len(inside):
        return None
    crops = nucleus_crops(site, inside[:n], size)
    x = self_standardize(torch.from_numpy(crops.astype(np.float32)))
    with torch.inference_mode():
        _, pred, mask = model(x, generator=torch.Generator().manual_seed(seed))
    panels = {k: v.float().numpy() for k, v in reconstruction_images(model, x, pred, mask).items()}
    blocks = []
    for i in range(len(crops)):
        rows = []
        for c in range(crops.shape[1]):
            lo, hi = np.percentile(panels["target"][i, c], [1, 99])
            rows.append(
                np.concatenate(
                    [
                        np.clip((panels[k][i, c] - lo) / max(hi - lo, 1e-6), 0, 1)
                        for k in ("masked", "reconstruction", "target")
                    ],
                    axis=1,
                )
            )
        blocks.append(np.pad(np.concatenate(rows, axis=0), ((0, 0), (0, 4)), constant_values=1))
    return (np.concatenate(blocks, axis=1) * 255).astype(np.uint8)


def run_probe(
    store_path: Path,
    nuclei_csv: Path,
    encoders: dict[str, Path],
    out: Path,
    crop_size: int = 64,
    folds: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """encoders: name -> train folder. Writes out/r2.csv and the reconstruction PNGs (report/probe.py draws them)."""
    from PIL import Image

    from ..data.store import ImageStore
    from ..train.checkpoint import load_module

    store = ImageStore(store_path)
    if len(store) != 1:
        raise InputError(f"{store_path}: the nucleus probe reads one field; this store has {len(store)} sites")
    nuclei = pd.read_csv(nuclei_csv)
    for col in ("Location_Center_X", "Location_Center_Y"):
        if col not in nuclei.columns:
            raise InputError(f"{nuclei_csv}: column '{col}' is missing")
    site = store.read(0)
    centers = nuclei[["Location_Center_X", "Location_Center_Y"]].to_numpy(np.float64)
    crops = nucleus_crops(site, centers, crop_size)
    out.mkdir(parents=True, exist_ok=True)
    embeddings = {}
    recon = {}
    for name, train_dir in encoders.items():
        module = load_module(train_dir / "model.ckpt")
        model = module.model.eval()
        embeddings[name] = embed_crops(model, crops)
        holdout = json.loads((train_dir / "config.json").read_text())["train"].get("holdout_width", 0.0)
        img = heldout_reconstructions(model, site.astype(np.float32), centers, crop_size, holdout, seed=seed)
        if img is not None:
            Image.fromarray(img).save(out / f"heldout_reconstructions_{name}.png")
            recon[name] = out / f"heldout_reconstructions_{name}.png"
    embeddings["raw pixels (16x16 block means)"] = pixel_features(crops)
    table = probe_table(embeddings, nuclei, folds, seed)
    table.to_csv(out / "r2.csv", index=False)
    return table
