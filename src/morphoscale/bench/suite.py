"""`morphoscale bench`: every metric of a map, as tidy tables, figures and a summary.json.

Each metric runs or is skipped with a one-line reason (summary.json: {"skipped": ...});
one that cannot run on a small screen never stops the others. Every headline number has
a 95% jackknife interval (summary.json "estimates", and `<key>_ci` beside the number),
and its jackknife replicates go to replicates.parquet, from which two maps scored on the
same units are compared paired (bench/summary.py).

`metrics` picks what runs (METRICS; default: every metric the map supports but clustering);
each metric's wall time and peak resident memory go to summary.json "cost", and a line per
metric to `log` as it finishes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .. import __version__
from ..determinism import record
from ..errors import InputError
from ..io import BENCH_FOLDER, check_output, commit_dir, mark_output, os_error_message, partial_dir, refuse_overlap
from ..memory import RssSampler, peak_rss_mb
from .groups import compound_metrics, gene_metrics, truth_metrics, well_metrics
from .intervals import Estimate, fraction_with_interval
from .metrics import PROTOCOLS, select_metrics
from .profiles import gene_profiles

SKIPPABLE = (InputError, ValueError, np.linalg.LinAlgError)


class Results:
    """What a bench run collects: summary.json, the tables, the jackknife replicates."""

    def __init__(
        self, folder: Path, summary: dict, metrics: list[str], named: bool, log: Callable[[str], None] | None = None
    ):
        self.folder = folder
        self.summary = summary
        self.summary.setdefault("estimates", {})
        self.summary["metrics"] = list(metrics)
        self.summary["cost"] = {}
        self.replicates: list[pd.DataFrame] = []
        self.metrics, self.named, self.log = metrics, named, log

    def wants(self, key: str) -> bool:
        return key in self.metrics

    def unsupported(self, key: str, why: str) -> None:
        """A metric the map cannot support: skipped with the reason when the user asked for it by name."""
        if self.named and key in self.metrics:
            self.summary[key] = {"skipped": why}

    def save(self, name: str, df: pd.DataFrame) -> pd.DataFrame:
        df.to_csv(self.folder / f"{name}.csv", index=False)
        return df

    def run(self, key: str, fn: Callable[[], None], cost_of: str | None = None) -> None:
        """Run one metric if it was asked for; an input it cannot handle skips it with the reason,
        the others go on. Its wall time and peak memory go to summary["cost"] (under `cost_of`
        for a metric's figure)."""
        if (cost_of or key) not in self.metrics:
            return
        sampler, t0 = RssSampler().start(), time.perf_counter()
        try:
            fn()
        except SKIPPABLE as e:
            self.summary[key] = {"skipped": " ".join(str(e).split()) or type(e).__name__}
        finally:
            seconds, peak = time.perf_counter() - t0, sampler.stop()
        cost = self.summary["cost"].setdefault(cost_of or key, {"seconds": 0.0, "peak_rss_mb": 0.0})
        cost["seconds"] = round(cost["seconds"] + seconds, 3)
        cost["peak_rss_mb"] = round(max(cost["peak_rss_mb"], peak), 1)
        if self.log:
            skipped = " (skipped)" if "skipped" in self.summary.get(key, {}) else ""
            self.log(f"bench: {key} {seconds:.1f} s, peak {peak:,.0f} MB{skipped}")

    def estimate(
        self, metric: str, est: Estimate, replicates: pd.DataFrame, entry: dict | None = None, field: str | None = None
    ) -> None:
        """Record a headline number's interval (and beside `field` in `entry`, as <field>_ci)."""
        self.summary["estimates"][metric] = est.as_dict()
        self.replicates.append(replicates)
        if entry is not None and field is not None:
            entry[f"{field}_ci"] = [est.ci_low, est.ci_high]

    def fraction(self, key: str, field: str, hits: np.ndarray, units, entry: dict) -> None:
        est, reps = fraction_with_interval(hits, units, f"{key}/{field}")
        entry[field] = est.value if len(hits) else None
        self.estimate(f"{key}/{field}", est, reps, entry, field)

    def write(self) -> None:
        reps = (
            pd.concat(self.replicates, ignore_index=True)
            if self.replicates
            else pd.DataFrame(columns=["metric", "unit", "value"])
        )
        reps.to_parquet(self.folder / "replicates.parquet", index=False)
        (self.folder / "summary.json").write_text(json.dumps(self.summary, indent=2, default=_json_default))


# Long by its signature (the verb's 17 options); the metrics themselves are in bench/groups.py.
def run_bench(
    map_path: Path,
    out: Path,
    wells: Path | None = None,
    raw: Path | None = None,
    annotations: Path | None = None,
    extra_pairs: dict[str, Path] | None = None,
    compound_targets: Path | None = None,
    clustering: bool = False,
    null_size: int = 10000,
    seed: int = 0,
    overwrite: bool = False,
    figures: bool = True,
    truth: Path | None = None,
    metrics: list[str] | None = None,
    quick: bool = False,
    log: Callable[[str], None] | None = None,
    protocol: str | None = None,
) -> dict:
    from ..data import examples
    from ..maps.build import read_embeddings, wells_path

    out = Path(out)
    chosen, named = select_metrics(metrics, quick, clustering, protocol=protocol)
    refuse_overlap(out, map_path, wells, raw, annotations, compound_targets, truth, *(extra_pairs or {}).values())
    check_output(out, overwrite, BENCH_FOLDER)
    t0 = time.perf_counter()
    m = read_map(Path(map_path))
    wells = Path(wells) if wells else wells_path(Path(map_path))
    W = read_embeddings(wells) if wells.exists() else None
    ann = Path(annotations) if annotations else examples.get("annotations")
    if truth is not None:
        from ..simulate.oracle import read_truth

        truth_path = truth
        from .clusters import truth_units

        truth = read_truth(Path(truth))
        truth = (*truth, *truth_units(Path(truth_path), truth[1]["gene"].astype(str).tolist()))
    part = partial_dir(out)
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        header = {
            "map": str(map_path),
            "morphoscale_version": __version__,
            "provenance": dict(m.uns.get("provenance", {})),
            "determinism": record(with_torch=False),
            "null_size": null_size,
            "seed": seed,
        }
        res = Results(part, header, chosen, named, log)
        res.summary["cost"]["read"] = _cost(t0)
        if protocol is not None:
            p = PROTOCOLS[protocol]
            res.summary["protocol"] = {
                "name": p.name,
                "steps": p.steps,
                "recall_profiles": p.recall_profiles,
                "published": p.published,
            }
        gene_only = gene_profiles(m)
        with_compounds = protocol is not None and PROTOCOLS[protocol].recall_profiles == "all"
        G, genes = gene_profiles(m, with_compounds=True) if with_compounds else gene_only
        gene_metrics(res, G, genes, ann, extra_pairs, null_size, seed, figures)
        compound_metrics(res, m, *gene_only, compound_targets, null_size, seed)
        if W is not None:
            well_metrics(res, W, null_size, seed, figures, raw)
        else:
            for key in ("consistency", "magnitude", "map_activity", "drug_vs_control", "umap", "clustering"):
                res.unsupported(key, f"needs the aligned well embeddings ({wells} not found)")
        if truth is not None:
            truth_metrics(res, W, G, genes, truth, seed)
        else:
            for key in ("decoding_r2", "truth_cosine"):
                res.unsupported(key, "needs a simulated screen's ground truth (--truth)")
        res.summary["cost"]["total"] = _cost(t0)
        res.write()
        mark_output(part, BENCH_FOLDER)
        commit_dir(part, out)
    except OSError as e:  # disk full, a read-only folder: one line, and nothing behind
        raise InputError(os_error_message(Path(getattr(e, "filename", None) or out), e)) from None
    finally:
        shutil.rmtree(part, ignore_errors=True)  # an error leaves nothing behind
    return res.summary


def _cost(t0: float) -> dict:
    return {"seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}


def read_map(map_path: Path):
    from ..maps.build import read_h5ad

    m = read_h5ad(map_path, "map", "a map (.h5ad written by `morphoscale map`)")
    if "is_control" not in m.obs.columns or "perturbation" not in m.obs.columns:
        raise InputError(
            f"{map_path}: not a map (obs lacks 'perturbation' or 'is_control'); make one with `morphoscale map`"
        )
    keys = [c for c in ("perturbation", "concentration") if c in m.obs.columns]
    dup = m.obs[~m.obs["is_control"].to_numpy(bool)].duplicated(subset=keys)
    if dup.any():
        first = m.obs[~m.obs["is_control"].to_numpy(bool)][dup]["perturbation"].iloc[0]
        raise InputError(
            f"{map_path}: not a map (perturbation '{first}' has several rows: wells, not profiles); make one with `morphoscale map`"
        )
    bad = ~np.isfinite(np.asarray(m.X)).all(axis=1)
    if bad.any():
        raise InputError(
            f"{map_path}: profile '{m.obs_names[bad][0]}' holds a NaN or infinite value ({int(bad.sum())} such rows); "
            "every number must be finite"
        )
    return m


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
