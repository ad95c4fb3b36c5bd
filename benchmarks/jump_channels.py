"""Which Phenix channel file of the JUMP pilot field is which stain (#23).

The field's own CellProfiler Nuclei.csv measured every channel per nucleus under the names
its pipeline gave the files. Ranking each file's mean intensity in a 6 px disk at every
nucleus centre against each CellProfiler channel's MeanIntensity says which file that
pipeline called which stain; the best one-to-one assignment is printed beside the mapping
morphoscale uses (data/examples.py JUMP_FIELD_FILES).

    .venv/bin/python benchmarks/jump_channels.py
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import itertools

import numpy as np
import pandas as pd
import tifffile
from scipy import stats

from morphoscale.data import examples

STAINS = ("DNA", "ER", "RNA", "AGP", "Mito")


def nucleus_means(image: np.ndarray, nuclei: pd.DataFrame, r: int = 6) -> np.ndarray:
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = yy**2 + xx**2 <= r * r
    out = []
    for x, y in zip(nuclei["Location_Center_X"].round().astype(int), nuclei["Location_Center_Y"].round().astype(int)):
        out.append(image[y - r : y + r + 1, x - r : x + r + 1][disk].mean())
    return np.asarray(out)


def correlation_table(folder) -> pd.DataFrame:
    """Spearman correlation of each channel file (rows) with each CellProfiler stain (columns)."""
    nuclei = pd.read_csv(folder / "Nuclei.csv")
    h = w = 1080
    nuclei = nuclei[nuclei["Location_Center_X"].between(7, w - 8) & nuclei["Location_Center_Y"].between(7, h - 8)]
    files = sorted(f.name for f in folder.glob("r01c01f01p01-ch*sk1fk1fl1.tiff"))
    rows = {}
    for f in files:
        means = nucleus_means(tifffile.imread(folder / f).astype(np.float64), nuclei)
        rows[f] = {s: stats.spearmanr(means, nuclei[f"Intensity_MeanIntensity_{s}"]).statistic for s in STAINS}
    return pd.DataFrame(rows).T


def best_assignment(table: pd.DataFrame) -> dict[str, str]:
    """stain -> file maximizing the summed correlation over one-to-one assignments."""
    best = max(
        itertools.permutations(table.index, len(STAINS)),
        key=lambda files: sum(table.at[f, s] for f, s in zip(files, STAINS)),
    )
    return dict(zip(STAINS, best))


if __name__ == "__main__":
    folder = examples.get("jump-pilot-field")
    table = correlation_table(folder)
    print(table.round(3).to_string())
    found = best_assignment(table)
    for s in STAINS:
        print(
            f"{s:5s} best file {found[s]}  morphoscale uses {examples.JUMP_FIELD_FILES[s]}  "
            f"{'agrees' if found[s] == examples.JUMP_FIELD_FILES[s] else 'DIFFERS'}"
        )
