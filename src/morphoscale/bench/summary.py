"""The one reader of a bench folder (summary.json, recall.csv, replicates.parquet): the
headline metrics with their intervals, what was skipped and why, and paired differences
between two maps scored on the same units. The report, compare and the CLI read bench
results through this module only."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .intervals import paired_difference
from .relationships import HEADLINE, SOURCES, recall_metric


@dataclass(frozen=True)
class Headline:
    metric: str  # the name in summary.json "estimates" and in replicates.parquet
    label: str
    random: float | None
    bounds: tuple[float | None, float | None] = (0.0, 1.0)


def headline_metrics(sources=SOURCES) -> list[Headline]:
    """The numbers every table leads with, in order; each has an interval and a random baseline."""
    lo = HEADLINE[0]
    out = [Headline(recall_metric(s, lo), f"{s} recall", None) for s in sources]
    out += [
        Headline("map_activity/fraction_retrieved", "mAP activity: fraction retrieved", 0.05),
        Headline("map_consistency/fraction_retrieved", "mAP CORUM consistency: fraction retrieved", 0.05),
        Headline("consistency/fraction_significant", "replicate consistency: fraction significant", 0.05),
        Headline("complexes/fraction_significant", "complexes significant (KS)", 0.05),
        Headline("map_target_consistency/fraction_retrieved", "mAP target consistency: fraction retrieved", 0.05),
        Headline("compound_gene/mean_auc", "compound-gene mean AUC", 0.5),
        Headline("compound_gene/mean_average_precision", "compound-gene mean AP", None),
        Headline("decoding_r2", "decoding R2 of the true parameters", 0.0, (None, 1.0)),
        Headline("truth_cosine_spearman", "cosine correlation with the truth (Spearman)", 0.0, (-1.0, 1.0)),
    ]
    return out


@dataclass
class BenchResult:
    folder: Path
    summary: dict
    _replicates: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def estimates(self) -> dict[str, dict]:
        return self.summary.get("estimates", {})

    def recall(self) -> pd.DataFrame:
        """The recall table (empty when recall was skipped)."""
        rec = self.summary.get("recall")
        return (
            pd.DataFrame(rec)
            if isinstance(rec, list)
            else pd.DataFrame(
                columns=["source", "lower", "upper", "recall", "ci_low", "ci_high", "n_pairs", "random_recall"]
            )
        )

    def random_of(self, h: Headline) -> float | None:
        if h.metric.startswith("recall/"):
            r = self.recall()
            r = r[(r["source"] == h.metric.split("/")[1]) & (r["lower"] == HEADLINE[0])]
            return float(r["random_recall"].iloc[0]) if len(r) else None
        if h.metric == "compound_gene/mean_average_precision":
            return self.summary.get("compound_gene", {}).get("random_average_precision")
        return h.random

    def skipped(self) -> dict[str, str]:
        return {k: v["skipped"] for k, v in self.summary.items() if isinstance(v, dict) and "skipped" in v}

    def cost(self) -> dict[str, dict]:
        """Seconds and peak resident MB of each metric (and of reading the inputs, and in total);
        empty for a bench folder written before the bench recorded them."""
        return {k: v for k, v in self.summary.get("cost", {}).items() if isinstance(v, dict)}

    def replicates(self) -> pd.DataFrame:
        if self._replicates is None:
            f = self.folder / "replicates.parquet"
            self._replicates = pd.read_parquet(f) if f.exists() else pd.DataFrame(columns=["metric", "unit", "value"])
        return self._replicates

    def replicates_of(self, metric: str) -> pd.Series:
        r = self.replicates()
        r = r[r["metric"] == metric]
        return pd.Series(r["value"].to_numpy(), index=r["unit"].to_numpy())


def read(folder: Path) -> BenchResult:
    folder = Path(folder)
    f = folder / "summary.json"
    if not f.exists():
        raise InputError(f"{folder}: not a bench folder (no summary.json; make one with `morphoscale bench`)")
    try:
        return BenchResult(folder, json.loads(f.read_text()))
    except json.JSONDecodeError as e:
        raise InputError(f"{f}: not valid JSON ({e.msg}, line {e.lineno})") from None


def headline_table(results: dict[str, BenchResult]) -> pd.DataFrame:
    """Long table: encoder, metric, label, value, ci_low, ci_high, random (only metrics that ran)."""
    rows = []
    for name, r in results.items():
        for h in headline_metrics():
            e = r.estimates.get(h.metric)
            if e is None:
                continue
            rows.append(
                {
                    "encoder": name,
                    "metric": h.metric,
                    "label": h.label,
                    "value": e["value"],
                    "ci_low": e["ci_low"],
                    "ci_high": e["ci_high"],
                    "random": r.random_of(h),
                }
            )
    return pd.DataFrame(rows, columns=["encoder", "metric", "label", "value", "ci_low", "ci_high", "random"])


def paired(a: BenchResult, b: BenchResult, metrics: list[Headline] | None = None) -> pd.DataFrame:
    """a - b for every headline metric both have, with the paired jackknife interval."""
    rows = []
    for h in metrics or headline_metrics():
        ea, eb = a.estimates.get(h.metric), b.estimates.get(h.metric)
        if ea is None or eb is None:
            continue
        lo = None if h.bounds[0] is None or h.bounds[1] is None else -(h.bounds[1] - h.bounds[0])
        hi = None if lo is None else -lo
        est, why = paired_difference(
            ea["value"], a.replicates_of(h.metric), eb["value"], b.replicates_of(h.metric), (lo, hi), ea.get("unit", "")
        )
        row = {
            "metric": h.metric,
            "label": h.label,
            "a": ea["value"],
            "b": eb["value"],
            "difference": ea["value"] - eb["value"],
            "ci_low": np.nan,
            "ci_high": np.nan,
            "se": np.nan,
            "n_units": np.nan,
            "unit": ea.get("unit", ""),
            "note": why,
        }
        if est is not None:
            row.update(
                se=est.se,
                ci_low=est.ci_low,
                ci_high=est.ci_high,
                n_units=est.n_units,
                note="beyond the interval" if (est.ci_low > 0 or est.ci_high < 0) else "within the interval",
            )
        rows.append(row)
    return pd.DataFrame(
        rows, columns=["metric", "label", "a", "b", "difference", "ci_low", "ci_high", "se", "n_units", "unit", "note"]
    )


def run_results(run_dir: Path, names) -> dict[str, BenchResult]:
    """The bench results of a run folder's encoders (encoders/<name>/bench), those that exist, in order."""
    folders = {n: Path(run_dir) / "encoders" / n / "bench" for n in dict.fromkeys(names)}
    return {n: read(f) for n, f in folders.items() if (f / "summary.json").exists()}


def recall_table(results: dict[str, BenchResult]) -> pd.DataFrame:
    """Recall per encoder and source at the headline threshold with its interval, the random baseline beside it."""
    rows = []
    for name, res in results.items():
        r = res.recall()
        for _, row in r[r["lower"] == HEADLINE[0]].iterrows():
            rows.append(
                {
                    "encoder": name,
                    "source": row["source"],
                    "recall": row["recall"],
                    "ci_low": row["ci_low"],
                    "ci_high": row["ci_high"],
                    "random": row["random_recall"],
                    "n_pairs": int(row["n_pairs"]),
                }
            )
    return pd.DataFrame(rows, columns=["encoder", "source", "recall", "ci_low", "ci_high", "random", "n_pairs"])


PAIRED_COLUMNS = [
    "encoder",
    "baseline",
    "metric",
    "label",
    "a",
    "b",
    "difference",
    "ci_low",
    "ci_high",
    "se",
    "n_units",
    "unit",
    "note",
]


def paired_table(
    results: dict[str, BenchResult], baselines: dict[str, str], families: dict[str, str] | None = None
) -> pd.DataFrame:
    """Every headline metric of each encoder minus its baseline's, paired, with the interval;
    then, for encoders trained with several seeds (`families`: name -> the name the seeds
    share), the difference pooled over the seeds (`pool_seeds`)."""
    parts = []
    for name, base in baselines.items():
        if name in results and base in results:
            t = paired(results[name], results[base])
            t.insert(0, "baseline", base)
            t.insert(0, "encoder", name)
            parts.append(t)
    t = pd.concat(parts, ignore_index=True)[PAIRED_COLUMNS] if parts else pd.DataFrame(columns=PAIRED_COLUMNS)
    return pd.concat([t, pool_seeds(t, families or {})], ignore_index=True) if families and len(t) else t


def pool_seeds(t: pd.DataFrame, families: dict[str, str]) -> pd.DataFrame:
    """One row per (family, baseline family, metric) over k >= 2 training seeds: the mean
    difference, SE^2 = s_between^2 / k + mean of the per-seed SE^2, and a t interval on k - 1
    degrees of freedom. The seeds share one screen, so its sampling error does not shrink with
    k: the per-seed SE^2 enters undivided; s_between^2 / k is the training seeds' own spread."""
    from scipy.stats import t as student

    t = t[t["encoder"].isin(families.keys())].dropna(subset=["se"])
    rows = []
    fam = t["encoder"].map(families)
    base = t["baseline"].map(lambda b: families.get(b, b))
    for (f, b, metric), g in t.groupby([fam, base, t["metric"]], sort=False):
        k = len(g)
        if k < 2:
            continue
        d = g["difference"].to_numpy(float)
        se = float(np.sqrt(d.var(ddof=1) / k + np.mean(g["se"].to_numpy(float) ** 2)))
        half = float(student.ppf(0.975, k - 1)) * se
        lo, hi = d.mean() - half, d.mean() + half
        rows.append(
            {
                "encoder": f"{f} ({k} seeds)",
                "baseline": b,
                "metric": metric,
                "label": g["label"].iloc[0],
                "a": g["a"].mean(),
                "b": g["b"].mean(),
                "difference": d.mean(),
                "ci_low": lo,
                "ci_high": hi,
                "se": se,
                "n_units": g["n_units"].iloc[0],
                "unit": g["unit"].iloc[0],
                "note": ("beyond the interval" if (lo > 0 or hi < 0) else "within the interval")
                + f"; seeds {', '.join(f'{v:+.3f}' for v in d)}",
            }
        )
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def units_label(n_units, unit) -> str:
    """'39 clusters', '103 genes': how many units an interval stands on ('' when unknown)."""
    if n_units is None or (isinstance(n_units, float) and not np.isfinite(n_units)):
        return ""
    word = unit.split()[0] if isinstance(unit, str) and unit.strip() else "unit"
    return f"{int(n_units)} {word}s"


def fmt(value, ci_low=None, ci_high=None, digits: int = 3) -> str:
    """'0.153 [0.101, 0.205]', or '' for a missing value."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    s = f"{value:.{digits}f}"
    if ci_low is not None and ci_high is not None and np.isfinite(ci_low) and np.isfinite(ci_high):
        s += f" [{ci_low:.{digits}f}, {ci_high:.{digits}f}]"
    return s


# the columns of compare's results table: short name -> headline metric (each with _ci_low, _ci_high)
RESULT_METRICS = {
    **{f"recall_{src}": f"recall/{src}/5" for src in ("CORUM", "HuMAP", "Reactome", "SIGNOR", "StringDB")},
    "map_activity_fraction": "map_activity/fraction_retrieved",
    "consistency_fraction": "consistency/fraction_significant",
    "decoding_r2": "decoding_r2",
    "truth_cosine": "truth_cosine_spearman",
}
PAIRED_METRICS = ("recall_CORUM", "decoding_r2", "truth_cosine")  # also reported as differences from the baseline
