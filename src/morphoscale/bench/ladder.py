"""The ladder: where each learned encoder stands among what costs nothing.

Beating its own untrained twin says a model learned something; users ask more: is it better
than the strongest untrained encoder of any architecture, than the hand-crafted features,
and how much of the way to the truth does it go? Each learned encoder (one with a
`baseline`) is paired with:

1. its untrained twin (its `baseline`),
2. the strongest untrained encoder, named in the config (chosen on another screen, so no rung
   is picked on the screen it is reported on),
3. the hand-crafted features,

each as a paired difference with its interval (bench/summary.paired), and placed against
4. the oracle, as the fraction of the oracle's distance from random it covers,
   (E - random) / (oracle - random), with the jackknife interval of that ratio over the
   shared units.

Every headline metric is higher-is-better, so a rung is reached on a metric when the
difference's interval lies above 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .intervals import estimate
from .summary import PAIRED_COLUMNS, BenchResult, headline_metrics, paired

RUNGS = ("twin", "strongest untrained", "features")
COLUMNS = ["encoder", "rung", "other", *PAIRED_COLUMNS[2:]]


@dataclass(frozen=True)
class Rungs:
    """The run's encoders that stand on the rungs above the twin."""

    untrained: str | None = None
    features: str | None = None
    oracle: str | None = None


def ladder_table(results: dict[str, BenchResult], baselines: dict[str, str], rungs: Rungs) -> pd.DataFrame:
    """One row per learned encoder, rung and headline metric: the paired difference (rungs 1-3)
    or the oracle fraction (rung 'oracle fraction': value in 'difference', E in 'a', the oracle in 'b')."""
    parts = []
    for name, twin in baselines.items():
        if name not in results:
            continue
        for rung, other in zip(RUNGS, (twin, rungs.untrained, rungs.features)):
            if rung != "twin" and other == twin:
                continue  # its twin is that rung already
            if other and other != name and other in results:
                t = paired(results[name], results[other])
                parts.append(t.assign(encoder=name, rung=rung, other=other))
        if rungs.oracle and rungs.oracle in results:
            parts.append(oracle_fraction(results[name], results[rungs.oracle]).assign(encoder=name, other=rungs.oracle))
    return pd.concat(parts, ignore_index=True)[COLUMNS] if parts else pd.DataFrame(columns=COLUMNS)


def oracle_fraction(e: BenchResult, oracle: BenchResult) -> pd.DataFrame:
    """(E - random) / (oracle - random) per headline metric with a random level, jackknifed
    over the units both share (each replicate the ratio of the replicates)."""
    rows = []
    for h in headline_metrics():
        ee, eo, r = e.estimates.get(h.metric), oracle.estimates.get(h.metric), oracle.random_of(h)
        if ee is None or eo is None or r is None or not eo["value"] - r > 0:
            continue
        ra, ro = e.replicates_of(h.metric), oracle.replicates_of(h.metric)
        if set(ra.index) != set(ro.index):
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = ((ra - r) / (ro.reindex(ra.index) - r)).to_numpy()
        est = estimate((ee["value"] - r) / (eo["value"] - r), reps, unit=ee.get("unit", ""))
        rows.append(
            {
                "rung": "oracle fraction",
                "metric": h.metric,
                "label": h.label,
                "a": ee["value"],
                "b": eo["value"],
                "difference": est.value,
                "ci_low": est.ci_low,
                "ci_high": est.ci_high,
                "se": est.se,
                "n_units": est.n_units,
                "unit": est.unit,
                "note": f"of the way from random ({r:.3g}) to the oracle",
            }
        )
    return pd.DataFrame(rows, columns=["rung", *PAIRED_COLUMNS[2:]])


def verdicts(table: pd.DataFrame) -> list[str]:
    """One line per learned encoder: which rungs it passes beyond the interval, on which metrics."""
    lines = []
    for name, t in table.groupby("encoder", sort=False):
        said = []
        for rung in RUNGS:
            r = t[t["rung"] == rung]
            if not len(r):
                continue
            above = r[r["ci_low"] > 0]["label"].tolist()
            below = r[r["ci_high"] < 0]["label"].tolist()
            who = f"{rung} ({r['other'].iloc[0]})"
            said.append(f"above {who} on {_list(above)}" if above else f"not above {who} on any metric")
            if below:
                said[-1] += f"; below it on {_list(below)}"
        o = t[t["rung"] == "oracle fraction"]
        if len(o):
            best = o.loc[o["difference"].idxmax()]
            said.append(
                f"covers {best['difference']:.2f} [{best['ci_low']:.2f}, {best['ci_high']:.2f}] "
                f"of the oracle's distance from random on {best['label']} (its best)"
            )
        lines.append(f"{name}: " + "; ".join(said) + ".")
    return lines


def _list(labels: list[str]) -> str:
    return ", ".join(labels) if len(labels) <= 3 else ", ".join(labels[:3]) + f" and {len(labels) - 3} more"
