"""95% intervals for every metric, and paired differences between two maps, by the jackknife.

A metric is an estimate plus its jackknife replicates: the same metric recomputed with one
unit left out (a gene for gene-gene metrics, a perturbation or compound for per-perturbation
tables, a complex for per-complex tables). The standard error is the jackknife's,
sqrt((n - 1) / n * sum (theta_(-u) - mean)^2), and the interval estimate +- 1.96 SE, clipped to
the metric's range (fractions of independent units, which have no clustering to respect,
take the Wilson score interval instead, which does not collapse to a point at 0 or 1).
Genes are not independent units either: genes of one complex or pathway share biology, so
the gene-pair and truth metrics leave out a cluster of genes at a time (bench/clusters.py: the
simulated screen's clusters of genes that share a phenotype; for recall, groups of genes that
cut as few of the source's pairs as possible). Every estimate names its unit and how many
there are (`unit`, `n_units`): an interval over 39 clusters is not one over 103 genes.

Two maps scored on the same units (the same genes, the same perturbations) compare
paired: the replicates of the difference are the differences of the replicates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

Z95 = 1.959963984540054


@dataclass
class Estimate:
    value: float
    se: float
    ci_low: float
    ci_high: float
    n_units: int
    unit: str = ""  # what one left-out unit is (gene, cluster of genes, perturbation, ...)

    def as_dict(self) -> dict:
        return asdict(self)


def jackknife_se(replicates) -> float:
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    n = len(r)
    if n < 2:
        return float("nan")
    return float(np.sqrt((n - 1) / n * np.sum((r - r.mean()) ** 2)))


def estimate(
    value: float, replicates, bounds: tuple[float | None, float | None] = (None, None), unit: str = ""
) -> Estimate:
    se = jackknife_se(replicates)
    lo, hi = value - Z95 * se, value + Z95 * se
    if bounds[0] is not None:
        lo = max(lo, bounds[0])
    if bounds[1] is not None:
        hi = min(hi, bounds[1])
    n = int(np.isfinite(np.asarray(replicates, dtype=float)).sum())
    return Estimate(float(value), se, float(lo), float(hi), n, unit)


def ratio_replicates(num_total: float, den_total: float, num_units, den_units) -> np.ndarray:
    """Leave-one-unit-out values of num / den, where leaving out unit u removes num_u and den_u."""
    den = den_total - np.asarray(den_units, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (num_total - np.asarray(num_units, dtype=np.float64)) / den, np.nan)


def mean_replicates(values) -> np.ndarray:
    """Leave-one-out means of per-unit values."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return np.full(len(v), np.nan)
    return (v.sum() - v) / (len(v) - 1)


def replicate_frame(metric: str, units, replicates) -> pd.DataFrame:
    return pd.DataFrame(
        {"metric": metric, "unit": np.asarray(units).astype(str), "value": np.asarray(replicates, dtype=np.float64)}
    )


def paired_difference(
    value_a: float, rep_a: pd.Series, value_b: float, rep_b: pd.Series, bounds=(None, None), unit: str = ""
) -> tuple[Estimate | None, str]:
    """a - b with its jackknife interval, where both were scored on the same units (index:
    unit, values: replicates). (None, reason) when the units differ."""
    if set(rep_a.index) != set(rep_b.index):
        only = len(set(rep_a.index) ^ set(rep_b.index))
        return None, f"the two maps are scored on different units ({only} differ): no paired difference"
    d = rep_a - rep_b.reindex(rep_a.index)
    return estimate(value_a - value_b, d.to_numpy(), bounds, unit), ""


def wilson(k: float, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of k successes in n: unlike value +- 1.96 SE, it does not
    collapse to a point at 0 or n (0 of 60 perturbations retrieved is [0, 0.060], not [0, 0])."""
    if n == 0:
        return float("nan"), float("nan")
    p, z2 = k / n, Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def fraction_with_interval(hits, units, metric: str, unit: str = "") -> tuple[Estimate, pd.DataFrame]:
    """A fraction of independent units (perturbations retrieved, complexes significant): the
    Wilson interval, and the jackknife replicates for paired differences."""
    h = np.asarray(hits, dtype=np.float64)
    est, reps = mean_with_interval(h, units, metric, (0.0, 1.0), unit)
    est.ci_low, est.ci_high = wilson(h.sum(), len(h))
    return est, reps


def mean_with_interval(
    values, units, metric: str, bounds=(None, None), unit: str = ""
) -> tuple[Estimate, pd.DataFrame]:
    """The mean of per-unit values with its interval, and the replicates."""
    v = np.asarray(values, dtype=np.float64)
    reps = mean_replicates(v)
    est = estimate(float(v.mean()) if len(v) else float("nan"), reps, bounds, unit)
    return est, replicate_frame(metric, units, reps)
