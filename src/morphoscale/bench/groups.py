"""The bench's metrics in groups, by what they read: gene profiles (recall, complexes, mAP
consistency), compound profiles (compound-gene retrieval, drug similarity), well embeddings
(replicate consistency, magnitude, activity, drug vs control, clustering, UMAP) and the
simulated truth (decoding R2, cosine correlation). Each metric runs through `Results.run`,
which times it and skips it with a reason when the map cannot support it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import InputError
from . import plots
from .complexes import complex_ks, read_complexes
from .compounds import compound_gene_retrieval, drug_similarity_score, read_targets
from .intervals import mean_with_interval
from .probes import cluster_scores, drug_vs_control
from .profiles import compound_profiles
from .relationships import RECALL_UNIT, SOURCES, load_sources, pair_indices, recall_metric, recall_with_replicates
from .replicates import perturbation_magnitude, replicate_consistency
from .retrieval import phenotypic_activity, phenotypic_consistency

if TYPE_CHECKING:
    from .suite import Results


def gene_metrics(res: Results, G, genes, ann: Path, extra_pairs, null_size: int, seed: int, figures: bool) -> None:
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
                "n_units": r.n_units,
                "unit": RECALL_UNIT,
                "pairs_cut": r.pairs_cut,
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


def compound_metrics(res: Results, m, G, genes, compound_targets, null_size: int, seed: int) -> None:
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


def well_metrics(res: Results, W, null_size: int, seed: int, figures: bool, raw: Path | None) -> None:
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

    res.run("map_activity", lambda: _activity(res, X, obs, null_size, seed))
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
        res.run("umap", lambda: _umap(res, W, X, obs, Path(raw), seed))


def _activity(res: Results, X, obs, null_size: int, seed: int) -> None:
    """Phenotypic activity (copairs mAP of each perturbation's wells against controls)."""
    t = res.save("map_activity", phenotypic_activity(X, obs, null_size=null_size, seed=seed))
    entry = res.summary["map_activity"] = {
        "n": len(t),
        "mean_map": float(t["mean_average_precision"].mean()),
        "random_fraction_retrieved": 0.05,
    }
    res.fraction("map_activity", "fraction_retrieved", t["below_corrected_p"].to_numpy(bool), t["perturbation"], entry)


def _umap(res: Results, W, X, obs, raw: Path, seed: int) -> None:
    """The wells before and after alignment, coloured by batch (when every well is in both)."""
    from ..maps.build import read_embeddings

    R = read_embeddings(raw)
    before = pd.DataFrame(np.asarray(R.X), index=R.obs_names.astype(str)).reindex(W.obs_names.astype(str))
    if not before.isna().any().any():
        plots.umap_by_batch(
            before.to_numpy(), X, obs["batch"].astype(str).to_numpy(), res.folder / "umap_batch.png", seed=seed
        )


def truth_metrics(res: Results, W, G, genes, truth, seed: int) -> None:
    from .truth import decoding_r2, truth_cosine_correlation

    wells, phenotypes, params, clusters, targets = truth

    def decoding():
        if W is None:
            raise InputError("decoding R2 needs the aligned well embeddings (the map's .wells.h5ad)")
        obs = W.obs.reset_index(drop=True)
        table, est, reps, _ = decoding_r2(
            np.asarray(W.X), obs, wells, params, seed=seed, gene_cluster=clusters, compound_targets=targets
        )
        res.save("decoding_r2", table)
        entry = res.summary["decoding_r2"] = {
            "mean_r2": est.value,
            "n_wells": int(len(W)),
            "random": 0.0,
            "by_parameter": dict(zip(table["parameter"], table["r2"])),
            "unit": est.unit,
            "n_units": est.n_units,
        }
        res.estimate("decoding_r2", est, reps, entry, "mean_r2")

    def cosine():
        est, reps, n = truth_cosine_correlation(G, genes, phenotypes, params, clusters)
        entry = res.summary["truth_cosine"] = {
            "spearman": est.value,
            "n_genes": n,
            "random": 0.0,
            "unit": est.unit,
            "n_units": est.n_units,
        }
        res.estimate("truth_cosine_spearman", est, reps, entry, "spearman")

    res.run("decoding_r2", decoding)
    res.run("truth_cosine", cosine)
