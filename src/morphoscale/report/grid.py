"""The comparison grid's section and tables (compare/results.csv, summary.csv and the
figures `morphoscale compare` writes beside them), and the results as Markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..bench.summary import PAIRED_METRICS, RESULT_METRICS, fmt
from .elements import file_img, html_table

GRID_FIGURES = ("recall_vs_flops.png", "recall_vs_cost.png")  # as compare.grid.plots writes them


def grid_section(run_dir: Path) -> str:
    """The section, or nothing when the run folder holds no comparison."""
    folder = Path(run_dir) / "compare"
    if not (folder / "results.csv").exists():
        return ""
    results, summary = pd.read_csv(folder / "results.csv"), pd.read_csv(folder / "summary.csv")
    cols = table_columns(results)
    figs = "".join(
        f"<figure>{file_img(folder / f, Path(f).stem, 640)}</figure>" for f in GRID_FIGURES if (folder / f).exists()
    )
    return f"""
<h2>Comparison grid: every setup under the same budget</h2>
<p>Images seen, steps, time and memory as measured by each run (resources.json); FLOPs counted by torch over one
training step, times the images seen. Random recall beside every recall; every metric with its 95% interval (jackknife),
and the headline metrics as paired differences from each setup's untrained twin (column baseline) on the same genes and wells.</p>
{html_table(pd.DataFrame([{c.replace("_", " "): format_cell(r, c) for c in cols} for _, r in results.iterrows()]))}
<h3>Mean and sd over seeds</h3>
{html_table(summary)}
<div class=row>{figs}</div>
"""


def table_columns(results: pd.DataFrame) -> list[str]:
    cols = [
        "name",
        "images_seen",
        "optimizer_steps",
        "wall_seconds",
        "images_per_second",
        "peak_rss_mb",
        "parameters",
        "training_flops",
    ]
    cols += [c for c in RESULT_METRICS if c.startswith("recall_")] + [
        "random_recall",
        "map_activity_fraction",
        "decoding_r2",
        "truth_cosine",
    ]
    cols += ["baseline"] + [f"{c}_minus_baseline" for c in PAIRED_METRICS]
    return [c for c in cols if c in results.columns]


def format_value(v) -> str:
    """A number as tables show it: counts with thousands separators, small values to 3
    decimals, FLOPs in e-notation, nothing for a missing value."""
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        if abs(v) >= 1e9:
            return f"{v:.3g}"
        if float(v).is_integer() or abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def format_cell(row, col: str) -> str:
    """A value with its 95% interval where the table has one (col_ci_low, col_ci_high)."""
    lo, hi = row.get(f"{col}_ci_low"), row.get(f"{col}_ci_high")
    if lo is not None and hi is not None and not pd.isna(lo):
        return fmt(row[col], lo, hi)
    return format_value(row[col])


def markdown_table(results: pd.DataFrame) -> str:
    """The results as a Markdown table (compare/results.md), to paste into notes and docs."""
    cols = table_columns(results)

    lines = [
        "| " + " | ".join(c.replace("_", " ") for c in cols) + " |",
        "|" + "|".join("---" if c == "name" else "---:" for c in cols) + "|",
    ]
    lines += ["| " + " | ".join(format_cell(r, c) for c in cols) + " |" for _, r in results.iterrows()]
    return "\n".join(lines) + "\n"
