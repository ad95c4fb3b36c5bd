"""Per-cell measurements, vectorized over all objects of an image with bincount (no Python
loop per cell): shape, per-channel intensity, Haralick texture from grey-level
co-occurrence, radial distribution of intensity from the nucleus centre to the cell edge."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage import measure, segmentation

SHAPE = ("area", "perimeter", "eccentricity", "solidity", "extent", "major_axis_length", "minor_axis_length")
HARALICK = ("contrast", "homogeneity", "energy", "correlation", "entropy")


def _sums(labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(labels.ravel(), values.ravel().astype(np.float64), minlength=n + 1)[1:]


def shape_features(labels: np.ndarray, prefix: str) -> pd.DataFrame:
    t = measure.regionprops_table(labels, properties=("label", "centroid") + SHAPE)
    df = pd.DataFrame(t).set_index("label")
    return df.rename(
        columns={
            "centroid-0": f"{prefix}_center_y",
            "centroid-1": f"{prefix}_center_x",
            **{k: f"{prefix}_{k}" for k in SHAPE},
        }
    )


def intensity_features(labels: np.ndarray, image: np.ndarray, n: int, prefix: str) -> dict[str, np.ndarray]:
    x = image.astype(np.float64)
    count = np.maximum(_sums(labels, np.ones_like(x), n), 1)
    s = _sums(labels, x, n)
    mean = s / count
    var = np.maximum(_sums(labels, x * x, n) / count - mean**2, 0)
    mx = ndi.maximum(x, labels, np.arange(1, n + 1)) if n else np.zeros(0)
    return {
        f"{prefix}_integrated": s,
        f"{prefix}_mean": mean,
        f"{prefix}_std": np.sqrt(var),
        f"{prefix}_max": np.asarray(mx),
    }


def quantize(image: np.ndarray, levels: int) -> np.ndarray:
    """Grey levels 0..levels-1 over the image's 1st-99th percentile range."""
    lo, hi = np.percentile(image, [1, 99])
    return np.clip(((image.astype(np.float64) - lo) / max(hi - lo, 1e-12) * levels).astype(np.int64), 0, levels - 1)


def object_glcms(labels: np.ndarray, q: np.ndarray, n: int, levels: int) -> np.ndarray:
    """Co-occurrence counts (n, levels, levels) of every object at once: pixel pairs one step
    right and one step down with both pixels in the object, counted both ways (symmetric).
    Equals skimage.feature.graycomatrix(distances=[1], angles=[0, pi/2], symmetric=True)
    summed over the two angles, per object."""
    glcm = np.zeros((n + 1, levels, levels))
    for a, b, la, lb in (
        (q[:, :-1], q[:, 1:], labels[:, :-1], labels[:, 1:]),
        (q[:-1], q[1:], labels[:-1], labels[1:]),
    ):
        same = (la == lb) & (la > 0)
        idx = la[same] * levels * levels + a[same] * levels + b[same]
        m = np.bincount(idx, minlength=(n + 1) * levels * levels).reshape(n + 1, levels, levels)
        glcm += m + m.transpose(0, 2, 1)
    return glcm[1:]


def haralick(glcm: np.ndarray) -> dict[str, np.ndarray]:
    """Haralick statistics of normalized co-occurrence matrices (n, L, L), with graycoprops'
    definitions (energy = sqrt of the angular second moment; correlation 1 for a flat object)."""
    levels = glcm.shape[-1]
    P = glcm / np.maximum(glcm.sum(axis=(1, 2), keepdims=True), 1e-12)
    i, j = np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij")
    mu_i, mu_j = (P * i).sum((1, 2)), (P * j).sum((1, 2))
    sd_i = np.sqrt((P * (i - mu_i[:, None, None]) ** 2).sum((1, 2)))
    sd_j = np.sqrt((P * (j - mu_j[:, None, None]) ** 2).sum((1, 2)))
    cov = (P * (i - mu_i[:, None, None]) * (j - mu_j[:, None, None])).sum((1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(sd_i * sd_j > 1e-15, cov / (sd_i * sd_j), 1.0)
        ent = -(np.where(P > 0, P * np.log2(np.where(P > 0, P, 1)), 0)).sum((1, 2))
    return {
        "contrast": (P * (i - j) ** 2).sum((1, 2)),
        "homogeneity": (P / (1 + (i - j) ** 2)).sum((1, 2)),
        "energy": np.sqrt((P**2).sum((1, 2))),
        "correlation": corr,
        "entropy": ent,
    }


def haralick_features(
    labels: np.ndarray, image: np.ndarray, n: int, prefix: str, levels: int = 8
) -> dict[str, np.ndarray]:
    vals = haralick(object_glcms(labels, quantize(image, levels), n, levels))
    return {f"{prefix}_texture_{k}": vals[k] for k in HARALICK}


def radial_features(
    cells: np.ndarray, centers: np.ndarray, image: np.ndarray, n: int, prefix: str, bins: int = 4
) -> dict[str, np.ndarray]:
    """Fraction of each cell's intensity in `bins` rings of relative distance from its nucleus
    centre (0) to its edge (1)."""
    yy, xx = np.indices(cells.shape)
    inside = cells > 0
    c = centers[np.maximum(cells - 1, 0)]
    d_center = np.hypot(yy - c[..., 0], xx - c[..., 1])
    d_edge = ndi.distance_transform_edt(inside & ~segmentation.find_boundaries(cells, mode="inner"))
    r = np.where(inside, d_center / np.maximum(d_center + d_edge, 1e-9), 0)
    ring = np.minimum((r * bins).astype(np.int64), bins - 1)
    total = np.maximum(_sums(cells, image, n), 1e-12)
    return {f"{prefix}_radial_{k}": _sums(np.where(ring == k, cells, 0), image, n) / total for k in range(bins)}


def measure_cells(
    image: np.ndarray, channels: list[str], nuclei: np.ndarray, cells: np.ndarray, levels: int = 8, radial_bins: int = 4
) -> pd.DataFrame:
    """One row per nucleus (its cell grown from it), one column per feature."""
    n = int(nuclei.max())
    if n == 0:
        return pd.DataFrame()
    nuc = shape_features(nuclei, "nucleus").reindex(np.arange(1, n + 1))
    cel = shape_features(cells, "cell").reindex(np.arange(1, n + 1))
    cols: dict[str, np.ndarray] = {}
    centers = nuc[["nucleus_center_y", "nucleus_center_x"]].to_numpy()
    for c, name in enumerate(channels):
        cols |= intensity_features(nuclei, image[c], n, f"nucleus_{name}")
        cols |= intensity_features(cells, image[c], n, f"cell_{name}")
        cols |= haralick_features(cells, image[c], n, f"cell_{name}", levels)
        cols |= radial_features(cells, centers, image[c].astype(np.float64), n, f"cell_{name}", radial_bins)
    return pd.concat(
        [nuc, cel.drop(columns=["cell_center_y", "cell_center_x"]), pd.DataFrame(cols, index=nuc.index)], axis=1
    )
