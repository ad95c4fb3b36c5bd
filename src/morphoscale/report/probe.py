"""The real-field section: the nucleus-feature probe's table (probe/r2.csv) and the held-out
reconstructions (probe/heldout_reconstructions_*.png), as bench/nuclei.py wrote them."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from .elements import file_img, html_table


def probe_section(run_dir: Path, crop_size: int) -> str:
    """The section, or nothing when the run has no probe."""
    folder = Path(run_dir) / "probe"
    if not (folder / "r2.csv").exists():
        return ""
    table = pd.read_csv(folder / "r2.csv")
    wide = table.pivot_table(index="target", columns="embedding", values="r2", sort=False).reset_index()
    imgs = "".join(
        f"<figure>{file_img(p, f'held-out reconstructions {p.stem}', 900)}"
        f"<figcaption>{html.escape(p.stem.removeprefix('heldout_reconstructions_'))}: "
        "masked | reconstruction | target for each crop, one row per channel</figcaption></figure>"
        for p in sorted(folder.glob("heldout_reconstructions_*.png"))
    )
    return f"""
<h2>Real data: predicting CellProfiler nucleus features</h2>
<p>Crops of {crop_size} px centred on each of the {int(table["nuclei"].iloc[0])} nuclei of CellProfiler's Nuclei.csv,
embedded by each encoder;
ridge regression on the standardized, PCA-reduced (at most 32 components) embedding predicts each feature (log scale).
Cross-validated R2 (5 folds; 0 = predicting the mean). The raw-pixel baseline keeps absolute intensities, which the
self-standardized model inputs do not.</p>
{html_table(wide)}
<details><summary>R2 with its sd over folds</summary>{html_table(table)}</details>
<h3>Reconstructions of held-out crops (the right side of the field, never cropped in training)</h3>
<div class=row>{imgs or "<p>None (no masked model, or no hold-out).</p>"}</div>
"""
