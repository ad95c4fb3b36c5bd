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
from ..io import check_output, commit_dir, partial_dir
from ..memory import RssSampler, peak_rss_mb
from . import plots
from .complexes import complex_ks, read_complexes
from .compounds import compound_gene_retrieval, drug_similarity_score, read_targets
from .intervals import Estimate, fraction_with_interval, mean_with_interval
from .metrics import PROTOCOLS, select_metrics
from .probes import cluster_scores, drug_vs_control
from .relationships import SOURCES, load_sources, pair_indices, recall_metric, recall_with_replicates
from .replicates import perturbation_magnitude, replicate_consistency
from .retrieval import phenotypic_activity, phenotypic_consistency

SKIPPABLE = (InputError, ValueError, np.linalg.LinAlgError)


def gene_profiles(m, with_compounds: bool = False) -> tuple[np.ndarray, list[str]]:
    """The gene profiles of a map (and with_compounds: every compound-concentration profile too,
    named as the map's index names them, e.g. 'CPD@0.1')."""
    kind = m.obs["perturbation_type"].astype(str)
    rows = ((kind == "gene") | ((kind == "compound") & with_compounds)).to_numpy() & ~m.obs["is_control"].to_numpy(bool)
    names = np.where(kind == "gene", m.obs["perturbation"].astype(str), m.obs_names.astype(str))
    return np.asarray(m.X, dtype=np.float64)[rows], names[rows].tolist()


def compound_profiles(m) -> tuple[np.ndarray, list[str]]:
    """One profile per compound: the mean of its (concentration) rows in the map."""
    obs = m.obs
    rows = np.flatnonzero((obs["perturbation_type"].astype(str) == "compound").to_numpy())
    if not len(rows):
        return np.zeros((0, m.n_vars)), []
    codes, uniq = pd.factorize(obs["perturbation"].astype(str).to_numpy()[rows], sort=True)
    sums = np.zeros((len(uniq), m.n_vars))
    np.add.at(sums, codes, np.asarray(m.X, dtype=np.float64)[rows])
    return sums / np.bincount(codes)[:, None], list(uniq)


class _Results:
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
    check_output(out, overwrite)
    t0 = time.perf_counter()
    m = read_map(Path(map_path))
    wells = Path(wells) if wells else wells_path(Path(map_path))
    W = read_embeddings(wells) if wells.exists() else None
    ann = Path(annotations) if annotations else examples.get("annotations")
    if truth is not None:
        from ..simulate.oracle import read_truth

        truth = read_truth(Path(truth))
    part = partial_dir(out)
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        res = _Results(
            part,
            {
                "map": str(map_path),
                "morphoscale_version": __version__,
                "provenance": dict(m.uns.get("provenance", {})),
                "determinism": record(with_torch=False),
                "null_size": null_size,
                "seed": seed,
            },
            chosen,
            named,
            log,
        )
        res.summary["cost"]["read"] = {
            "seconds": round(time.perf_counter() - t0, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        if protocol is not None:
            p = PROTOCOLS[protocol]
            res.summary["protocol"] = {
                "name": p.name,
                "steps": p.steps,
                "recall_profiles": p.recall_profiles,
                "published": p.published,
            }
        gene_only = gene_profiles(m)
        G, genes = (
            gene_profiles(m, with_compounds=True)
            if protocol is not None and PROTOCOLS[protocol].recall_profiles == "all"
            else gene_only
        )
        _gene_metrics(res, G, genes, ann, extra_pairs, null_size, seed, figures)
        _compound_metrics(res, m, *gene_only, compound_targets, null_size, seed)
        if W is not None:
            _well_metrics(res, W, null_size, seed, figures, raw)
        else:
            for key in ("consistency", "magnitude", "map_activity", "drug_vs_control", "umap", "clustering"):
                res.unsupported(key, f"needs the aligned well embeddings ({wells} not found)")
        if truth is not None:
            _truth_metrics(res, W, G, genes, truth, seed)
        else:
            for key in ("decoding_r2", "truth_cosine"):
                res.unsupported(key, "needs a simulated screen's ground truth (--truth)")
        res.summary["cost"]["total"] = {
            "seconds": round(time.perf_counter() - t0, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        res.write()
        commit_dir(part, out)
    finally:
        shutil.rmtree(part, ignore_errors=True)  # an error leaves nothing behind
    return res.summary


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
    return m


def _gene_metrics(res: _Results, G, genes, ann: Path, extra_pairs, null_size: int, seed: int, figures: bool) -> None:
    if len(genes) < 2:
        res.summary["recall"] = {"skipped": f"the map has {len(genes)} gene profile(s); recall needs at least 2"}
        return
    if not any(res.wants(k) for k in ("recall", "complexes", "map_consistency")):
        return
    sources = load_sources(ann, SOURCES, extra_pairs) if res.wants("recall") else {}
    for name, path in (extra_pairs or {}).items() if sources else ():
        if not len(pair_indices(sources[name], genes)):
            raise InputError(f"{path}: no pair of this annotation has both genes in the map ({len(genes)} genes)")
    complexes = read_complexes(ann / "CORUM_clusters.tsv")
    ks_table: list[pd.DataFrame] = []  # the KS table, once, for the metric and the figure

    def recall():
        table, reps = recall_with_replicates(G, genes, sources)
        res.save("recall", table)
        res.summary["recall"] = table.to_dict(orient="records")
        res.replicates.append(reps)
        for r in table.itertuples():
            res.summary["estimates"][recall_metric(r.source, r.lower)] = {
                "value": r.recall,
                "se": r.se,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "n_units": r.n_genes,
            }
        if figures:
            plots.recall_bars(table, res.folder / "recall.png")

    def ks():
        t = res.save("complexes", complex_ks(G, genes, complexes))
        ks_table.append(t)
        entry = res.summary["complexes"] = {"n_tested": len(t), "random": 0.05}
        if not len(t):
            entry["skipped"] = "no CORUM complex has 10 or more genes in the map"
            return
        res.fraction(
            "complexes", "fraction_significant", (t["corrected_p_value"] < 0.05).to_numpy(), t["complex"], entry
        )

    def consistency():
        t = res.save("map_consistency", phenotypic_consistency(G, genes, complexes, null_size=null_size, seed=seed))
        entry = res.summary["map_consistency"] = {
            "n_groups": len(t),
            "mean_map": float(t["mean_average_precision"].mean()),
            "random_fraction_retrieved": 0.05,
        }
        res.fraction("map_consistency", "fraction_retrieved", t["below_corrected_p"].to_numpy(bool), t["group"], entry)

    def heatmap():
        t = ks_table[0] if ks_table else complex_ks(G, genes, complexes)
        # small maps rarely hold 10 genes of one complex: rank smaller ones for the figure
        shown = t if len(t) else complex_ks(G, genes, complexes, min_genes=3)
        plots.complex_heatmap(G, genes, complexes, shown, res.folder / "complex_heatmap.png")

    res.run("recall", recall)
    res.run("complexes", ks)
    res.run("map_consistency", consistency)
    if figures:
        res.run("complex_heatmap", heatmap, cost_of="complexes")


def _compound_metrics(res: _Results, m, G, genes, compound_targets, null_size: int, seed: int) -> None:
    C, compounds = compound_profiles(m)
    if not (compounds and compound_targets):
        for key in ("compound_gene", "map_target_consistency", "drug_similarity"):
            res.unsupported(
                key,
                "needs compound profiles in the map and --compound-targets"
                if compounds
                else "the map has no compound profile",
            )
        return
    if not any(res.wants(k) for k in ("compound_gene", "map_target_consistency", "drug_similarity")):
        return
    targets = read_targets(compound_targets)

    def retrieval():
        t = res.save("compound_gene", compound_gene_retrieval(C, compounds, G, genes, targets))
        if not len(t):
            raise InputError("no compound of the map has an annotated target among its genes")
        entry = res.summary["compound_gene"] = {
            "n": len(t),
            "random_auc": 0.5,
            "random_average_precision": float(t["random_average_precision"].mean()),
        }
        for field, col, bounds in (
            ("mean_auc", "auc", (0.0, 1.0)),
            ("mean_average_precision", "average_precision", (0.0, 1.0)),
        ):
            est, reps = mean_with_interval(t[col].to_numpy(), t["compound"], f"compound_gene/{field}", bounds)
            entry[field] = est.value
            res.estimate(f"compound_gene/{field}", est, reps, entry, field)

    def similarity():
        ctrl = np.asarray(m.X, dtype=np.float64)[m.obs["is_control"].to_numpy(bool)]
        if not len(ctrl):
            raise InputError("the map has no control profile")
        res.summary["drug_similarity"] = drug_similarity_score(C, compounds, ctrl, targets)

    def target_consistency():
        by_target: dict[str, list[str]] = {}
        for comp in compounds:
            for t in targets.get(comp, []):
                by_target.setdefault(t, []).append(comp)
        t = res.save(
            "map_target_consistency", phenotypic_consistency(C, compounds, by_target, null_size=null_size, seed=seed)
        )
        entry = res.summary["map_target_consistency"] = {
            "n_groups": len(t),
            "mean_map": float(t["mean_average_precision"].mean()),
            "random_fraction_retrieved": 0.05,
        }
        res.fraction(
            "map_target_consistency", "fraction_retrieved", t["below_corrected_p"].to_numpy(bool), t["group"], entry
        )

    res.run("compound_gene", retrieval)
    res.run("map_target_consistency", target_consistency)
    res.run("drug_similarity", similarity)


def _well_metrics(res: _Results, W, null_size: int, seed: int, figures: bool, raw: Path | None) -> None:
    from ..maps.build import read_embeddings

    X, obs = np.asarray(W.X, dtype=np.float64), W.obs.reset_index(drop=True)

    def per_perturbation(key: str, table_fn, field: str, flag):
        def go():
            t = res.save(key, table_fn())
            entry = res.summary[key] = {"n": len(t), "random": 0.05}
            res.fraction(key, field, flag(t), t["perturbation"], entry)

        return go

    res.run(
        "consistency",
        per_perturbation(
            "consistency",
            lambda: replicate_consistency(X, obs, seed=seed),
            "fraction_significant",
            lambda t: t["p_value"] < 0.05,
        ),
    )
    res.run(
        "magnitude",
        per_perturbation(
            "magnitude",
            lambda: perturbation_magnitude(X, obs, seed=seed),
            "fraction_significant",
            lambda t: t["p_value"] < 0.05,
        ),
    )

    def activity():
        t = res.save("map_activity", phenotypic_activity(X, obs, null_size=null_size, seed=seed))
        entry = res.summary["map_activity"] = {
            "n": len(t),
            "mean_map": float(t["mean_average_precision"].mean()),
            "random_fraction_retrieved": 0.05,
        }
        res.fraction(
            "map_activity", "fraction_retrieved", t["below_corrected_p"].to_numpy(bool), t["perturbation"], entry
        )

    res.run("map_activity", activity)
    if (
        (obs["perturbation_type"].astype(str) == "compound").any()
        and "plate" in obs.columns
        and obs["plate"].nunique() >= 2
    ):
        res.run(
            "drug_vs_control",
            lambda: res.summary.__setitem__(
                "drug_vs_control",
                res.save("drug_vs_control", drug_vs_control(X, obs, seed=seed)).to_dict(orient="records"),
            ),
        )
    else:
        res.unsupported("drug_vs_control", "needs compound wells on 2 or more plates")
    res.run(
        "clustering",
        lambda: res.summary.__setitem__(
            "clustering", res.save("clustering", cluster_scores(X, obs, seed=seed)).to_dict(orient="records")
        ),
    )
    if not (figures and raw is not None):
        res.unsupported("umap", "needs the unaligned embeddings (--raw-embeddings)" if figures else "figures are off")
    else:

        def umap():
            R = read_embeddings(Path(raw))
            before = pd.DataFrame(np.asarray(R.X), index=R.obs_names.astype(str)).reindex(W.obs_names.astype(str))
            if not before.isna().any().any():
                plots.umap_by_batch(
                    before.to_numpy(), X, obs["batch"].astype(str).to_numpy(), res.folder / "umap_batch.png", seed=seed
                )

        res.run("umap", umap)


def _truth_metrics(res: _Results, W, G, genes, truth, seed: int) -> None:
    from .truth import decoding_r2, truth_cosine_correlation

    wells, phenotypes, params = truth

    def decoding():
        if W is None:
            raise InputError("decoding R2 needs the aligned well embeddings (the map's .wells.h5ad)")
        table, est, reps, _ = decoding_r2(np.asarray(W.X), W.obs.reset_index(drop=True), wells, params, seed=seed)
        res.save("decoding_r2", table)
        entry = res.summary["decoding_r2"] = {
            "mean_r2": est.value,
            "n_wells": int(len(W)),
            "random": 0.0,
            "by_parameter": dict(zip(table["parameter"], table["r2"])),
        }
        res.estimate("decoding_r2", est, reps, entry, "mean_r2")

    def cosine():
        est, reps, n = truth_cosine_correlation(G, genes, phenotypes, params)
        entry = res.summary["truth_cosine"] = {"spearman": est.value, "n_genes": n, "random": 0.0}
        res.estimate("truth_cosine_spearman", est, reps, entry, "spearman")

    res.run("decoding_r2", decoding)
    res.run("truth_cosine", cosine)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
