"""The real-data stage of a run: per-nucleus crops of a field, embedded by each trained model,
predict CellProfiler's nucleus features (bench/nuclei.py); masked models also reconstruct
crops from the part of the field their training never cropped (TrainConfig.holdout_width)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..bench.nuclei import embed_crops, nucleus_crops, pixel_features, probe_table
from ..errors import InputError


def heldout_reconstructions(model, site: np.ndarray, centers_xy: np.ndarray, size: int, holdout_width: float, n: int = 4, seed: int = 0) -> np.ndarray | None:
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
            rows.append(np.concatenate([np.clip((panels[k][i, c] - lo) / max(hi - lo, 1e-6), 0, 1) for k in ("masked", "reconstruction", "target")], axis=1))
        blocks.append(np.pad(np.concatenate(rows, axis=0), ((0, 0), (0, 4)), constant_values=1))
    return (np.concatenate(blocks, axis=1) * 255).astype(np.uint8)


def run_probe(store_path: Path, nuclei_csv: Path, encoders: dict[str, Path], out: Path, crop_size: int = 64, folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """encoders: name -> train folder. Writes out/r2.csv, reconstruction PNGs and the report section."""
    from PIL import Image

    from ..data.store import ImageStore
    from ..train.run import load_module

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


def report_section(table: pd.DataFrame, recon_dir: Path, n_nuclei: int, crop_size: int) -> str:
    from ..report.html import _file_img, _table

    wide = table.pivot_table(index="target", columns="embedding", values="r2", sort=False).reset_index()
    imgs = "".join(f"<figure>{_file_img(p, f'held-out reconstructions {p.stem}', 900)}<figcaption>{html.escape(p.stem.removeprefix('heldout_reconstructions_'))}: "
                   "masked | reconstruction | target for each crop, one row per channel</figcaption></figure>" for p in sorted(recon_dir.glob("heldout_reconstructions_*.png")))
    return f"""
<h2>Real data: predicting CellProfiler nucleus features</h2>
<p>Crops of {crop_size} px centred on each of the {n_nuclei} nuclei of CellProfiler's Nuclei.csv, embedded by each encoder;
ridge regression on the standardized, PCA-reduced (at most 32 components) embedding predicts each feature (log scale).
Cross-validated R2 (5 folds; 0 = predicting the mean). The raw-pixel baseline keeps absolute intensities, which the
self-standardized model inputs do not.</p>
{_table(wide)}
<details><summary>R2 with its sd over folds</summary>{_table(table)}</details>
<h3>Reconstructions of held-out crops (the right side of the field, never cropped in training)</h3>
<div class=row>{imgs or '<p>None (no masked model, or no hold-out).</p>'}</div>
"""
