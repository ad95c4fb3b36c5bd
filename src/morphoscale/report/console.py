"""The tables the command line prints (rich), from the same files the HTML report reads:
a bench folder's summary, a run's recall.csv, paired.csv and probe/r2.csv, a comparison's
results. The CLI only prints them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.markup import escape
from rich.table import Table

from ..bench.relationships import DEFAULT_THRESHOLDS, HEADLINE
from ..bench.summary import BenchResult, fmt, headline_table, units_label
from .grid import format_cell
from .sections import recall_wide


def bench_tables(res: BenchResult) -> list[Table]:
    """Recall at both thresholds, the published numbers beside ours (a --protocol run), and
    every other metric; each with its 95% interval and the random map's value."""
    rec = res.recall()
    tables = []
    (lo_a, hi_a), (lo_b, hi_b) = DEFAULT_THRESHOLDS
    if len(rec):
        table = Table(
            "source",
            f"recall {lo_a:g}/{hi_a:g} [95% CI]",
            "random",
            f"recall {lo_b:g}/{hi_b:g} [95% CI]",
            "random",
            "pairs",
            "genes",
            title="known-relationship recall",
        )
        for src in dict.fromkeys(rec["source"]):
            a = rec[(rec["source"] == src) & (rec["lower"] == lo_a)].iloc[0]
            b = rec[(rec["source"] == src) & (rec["lower"] == lo_b)].iloc[0]
            table.add_row(
                src,
                fmt(a["recall"], a["ci_low"], a["ci_high"]),
                f"{a['random_recall']:.3f}",
                fmt(b["recall"], b["ci_low"], b["ci_high"]),
                f"{b['random_recall']:.3f}",
                str(a["n_pairs"]),
                str(a["n_genes"]),
            )
        tables.append(table)
    published = res.summary.get("protocol", {}).get("published", {})
    if published and len(rec):
        ours = {r.source: r.recall for r in rec[rec["lower"] == HEADLINE[0]].itertuples()}
        srcs = list(published["random"])
        t = Table(
            "source",
            *srcs,
            title=f"recall {HEADLINE[0]:g}/{HEADLINE[1]:g} beside the published numbers ({published['paper']})",
        )
        t.add_row("this map", *[f"{ours[s]:.3f}" if s in ours else "-" for s in srcs])
        for name, vals in published.items():
            if isinstance(vals, dict):
                t.add_row(name, *[f"{vals[s]:.3f}" for s in srcs])
        tables.append(t)
    other = headline_table({"map": res})
    other = other[~other["metric"].str.startswith("recall/")]
    if len(other):
        t2 = Table("metric", "value [95% CI]", "random", title="other metrics")
        for r in other.itertuples():
            t2.add_row(r.label, fmt(r.value, r.ci_low, r.ci_high), "" if pd.isna(r.random) else f"{r.random:.3f}")
        tables.append(t2)
    return tables


def reproducible_table(t: pd.DataFrame) -> Table:
    table = Table(title="the same stage run again: outputs compared (times and memory left out)")
    for c in ("stage", "output", "equal", "max |difference|", "detail"):
        table.add_column(c)
    for r in t.itertuples():
        table.add_row(
            r.stage,
            escape(r.output),
            "yes" if r.equal else "[red]no[/red]",
            f"{r.max_abs_diff:.3g}",
            escape(str(r.detail)),
        )
    return table


def recall_table(path: Path) -> Table | None:
    """A run's recall.csv by encoder and source, the random and pair-count rows dim; None when empty."""
    t = pd.read_csv(path)
    if not len(t):
        return None
    wide = recall_wide(t).fillna("")  # a source an encoder has no pairs in: blank
    table = Table(title="relationship recall (5% / 95%) [95% CI, delete-one-gene jackknife]")
    table.add_column("encoder")
    for src in wide.columns[1:]:
        table.add_column(src, justify="right")
    for k, row in enumerate(wide.itertuples(index=False)):
        table.add_row(*map(str, row), style="dim" if k >= len(wide) - 2 else None)
    return table


def paired_table(path: Path) -> Table | None:
    """A run's paired.csv: each encoder minus its baseline; None when there is none."""
    if not path.exists():
        return None
    t = pd.read_csv(path)
    if not len(t):
        return None
    table = Table(title="paired differences, encoder - baseline [95% CI]")
    for c in ("encoder - baseline", "metric", "encoder", "baseline", "difference [95% CI]", "units", ""):
        table.add_column(c, justify="left" if c in ("encoder - baseline", "metric", "") else "right")
    for r in t.itertuples():
        table.add_row(
            f"{r.encoder} - {r.baseline}",
            r.label,
            f"{r.a:.3f}",
            f"{r.b:.3f}",
            fmt(r.difference, r.ci_low, r.ci_high),
            units_label(r.n_units, getattr(r, "unit", "")),
            str(r.note) if isinstance(r.note, str) else "",
        )
    return table


def ladder_table(path: Path) -> tuple[list[str], Table] | None:
    """A run's ladder.csv: one verdict line per learned encoder, and the table behind it."""
    from ..bench.ladder import verdicts

    if not path.exists():
        return None
    t = pd.read_csv(path)
    if not len(t):
        return None
    table = Table(title="the ladder: each learned encoder against each rung [95% CI]")
    for c in ("encoder", "rung", "metric", "difference [95% CI]", "units", ""):
        table.add_column(c, justify="right" if c in ("difference [95% CI]", "units") else "left")
    for r in t.itertuples():
        table.add_row(
            r.encoder,
            f"{r.rung} ({r.other})",
            r.label,
            fmt(r.difference, r.ci_low, r.ci_high),
            units_label(r.n_units, r.unit),
            "" if r.rung == "oracle fraction" else ("beyond" if r.ci_low > 0 or r.ci_high < 0 else "within"),
        )
    return verdicts(t), table


def probe_table(path: Path) -> Table:
    """probe/r2.csv: R2 by target (rows) and embedding (columns), to 3 decimals."""
    t = pd.read_csv(path)
    wide = t.pivot_table(index="target", columns="embedding", values="r2", sort=False)
    table = Table(
        title=f"cross-validated R2 of CellProfiler nucleus features ({int(t['nuclei'].iloc[0])} nuclei; 0 = the mean)"
    )
    table.add_column("target")
    for c in wide.columns:
        table.add_column(str(c), justify="right")
    for name, row in wide.iterrows():
        table.add_row(str(name), *[f"{v:.3f}" for v in row])
    return table


def grid_table(results: pd.DataFrame) -> Table:
    """The comparison grid's headline columns, each with its interval."""
    cols = [
        c
        for c in (
            "name",
            "images_seen",
            "wall_seconds",
            "training_flops",
            "recall_CORUM",
            "random_recall",
            "recall_CORUM_minus_baseline",
        )
        if c in results.columns
    ]
    table = Table(title="comparison grid (CORUM recall at 5% / 95%, 95% CI; minus baseline: paired)")
    for c in cols:
        if c == "name":
            table.add_column(c, no_wrap=True, min_width=int(results["name"].str.len().max()))
        else:
            table.add_column(c.replace("_", " "), justify="right")
    for _, r in results.iterrows():
        table.add_row(*[format_cell(r, c) for c in cols])
    return table
