"""`morphoscale bench`: every metric of a map, as tidy tables, figures and a summary.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import InputError
from ..io import check_output, commit_dir, partial_dir
from . import plots
from .complexes import complex_ks, read_complexes
from .compounds import compound_gene_retrieval, drug_similarity_score, read_targets
from .probes import cluster_scores, drug_vs_control
from .relationships import SOURCES, load_sources, pair_indices, relationship_recall
from .replicates import perturbation_magnitude, replicate_consistency
from .retrieval import fraction_retrieved, phenotypic_activity, phenotypic_consistency


def gene_profiles(m) -> tuple[np.ndarray, list[str]]:
    rows = (m.obs["perturbation_type"].astype(str) == "gene").to_numpy() & ~m.obs["is_control"].to_numpy(bool)
    return np.asarray(m.X, dtype=np.float64)[rows], m.obs["perturbation"].astype(str)[rows].tolist()


def compound_profiles(m) -> tuple[np.ndarray, list[str]]:
    """One profile per compound: the mean of its (concentration) rows in the map."""
    obs = m.obs
    rows = np.flatnonzero((obs["perturbation_type"].astype(str) == "compound").to_numpy())
    if not len(rows):
        return np.zeros((0, m.n_vars)), []
    names = obs["perturbation"].astype(str).to_numpy()[rows]
    uniq = sorted(set(names))
    X = np.asarray(m.X, dtype=np.float64)[rows]
    return np.vstack([X[names == u].mean(axis=0) for u in uniq]), uniq


def run_bench(
    map_path: Path,
    out: Path,
    wells: Path | None = None,
    raw: Path | None = None,
    annotations: Path | None = None,
    extra_pairs: dict[str, Path] | None = None,
    compound_targets: Path | None = None,
    clustering: bool = False,
    null_size: int = 2000,
    seed: int = 0,
    overwrite: bool = False,
    figures: bool = True,
) -> dict:
    import anndata as ad

    from ..data import examples
    from ..maps.build import read_embeddings, wells_path

    out = Path(out)
    check_output(out, overwrite)
    if not Path(map_path).exists():
        raise InputError(f"{map_path}: map file not found")
    try:
        m = ad.read_h5ad(map_path)
    except Exception as e:
        raise InputError(f"{map_path}: cannot read as a map (.h5ad written by `morphoscale map`): {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if "is_control" not in m.obs.columns or "perturbation" not in m.obs.columns:
        raise InputError(f"{map_path}: not a map (obs lacks 'perturbation' or 'is_control'); make one with `morphoscale map`")
    wells = Path(wells) if wells else wells_path(Path(map_path))
    W = read_embeddings(wells) if wells.exists() else None
    ann = Path(annotations) if annotations else examples.get("annotations")
    part = partial_dir(out)
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        summary: dict = {"map": str(map_path), "morphoscale_version": __version__, "provenance": dict(m.uns.get("provenance", {}))}

        def save(name: str, df: pd.DataFrame) -> pd.DataFrame:
            df.to_csv(part / f"{name}.csv", index=False)
            return df

        G, genes = gene_profiles(m)
        complexes = read_complexes(ann / "CORUM_clusters.tsv")
        if len(genes) >= 2:
            sources = load_sources(ann, SOURCES, extra_pairs)
            for name, path in (extra_pairs or {}).items():
                if not len(pair_indices(sources[name], genes)):
                    raise InputError(f"{path}: no pair of this annotation has both genes in the map ({len(genes)} genes)")
            recall = save("recall", relationship_recall(G, genes, sources))
            summary["recall"] = recall.to_dict(orient="records")
            ks = save("complexes", complex_ks(G, genes, complexes))
            summary["complexes"] = {"n_tested": len(ks), "fraction_significant": float((ks["corrected_p_value"] < 0.05).mean()) if len(ks) else None, "random": 0.05}
            try:
                cons = save("map_consistency", phenotypic_consistency(G, genes, complexes, null_size=null_size, seed=seed))
                summary["map_consistency"] = {"n_groups": len(cons), "mean_map": float(cons["mean_average_precision"].mean()), "fraction_retrieved": fraction_retrieved(cons), "random_fraction_retrieved": 0.05}
            except InputError as e:
                summary["map_consistency"] = {"skipped": str(e)}
            if figures:
                plots.recall_bars(recall, part / "recall.png")
                # small maps rarely hold 10 genes of one complex: rank smaller ones for the figure
                shown = ks if len(ks) else complex_ks(G, genes, complexes, min_genes=3)
                plots.complex_heatmap(G, genes, complexes, shown, part / "complex_heatmap.png")
        C, compounds = compound_profiles(m)
        if compounds and compound_targets:
            targets = read_targets(compound_targets)
            cg = save("compound_gene", compound_gene_retrieval(C, compounds, G, genes, targets))
            summary["compound_gene"] = {"n": len(cg), "mean_auc": float(cg["auc"].mean()) if len(cg) else None, "random_auc": 0.5,
                                        "mean_average_precision": float(cg["average_precision"].mean()) if len(cg) else None,
                                        "random_average_precision": float(cg["random_average_precision"].mean()) if len(cg) else None}
            ctrl = np.asarray(m.X, dtype=np.float64)[m.obs["is_control"].to_numpy(bool)]
            if len(ctrl):
                summary["drug_similarity"] = drug_similarity_score(C, compounds, ctrl, targets)
        if W is not None:
            X, obs = np.asarray(W.X, dtype=np.float64), W.obs.reset_index(drop=True)
            rc = save("consistency", replicate_consistency(X, obs, seed=seed))
            mag = save("magnitude", perturbation_magnitude(X, obs, seed=seed))
            summary["consistency"] = {"n": len(rc), "fraction_significant": float((rc["p_value"] < 0.05).mean()) if len(rc) else None, "random": 0.05}
            summary["magnitude"] = {"n": len(mag), "fraction_significant": float((mag["p_value"] < 0.05).mean()) if len(mag) else None, "random": 0.05}
            act = save("map_activity", phenotypic_activity(X, obs, null_size=null_size, seed=seed))
            summary["map_activity"] = {"n": len(act), "mean_map": float(act["mean_average_precision"].mean()), "fraction_retrieved": fraction_retrieved(act), "random_fraction_retrieved": 0.05}
            if (obs["perturbation_type"].astype(str) == "compound").any() and "plate" in obs.columns and obs["plate"].nunique() >= 2:
                summary["drug_vs_control"] = save("drug_vs_control", drug_vs_control(X, obs, seed=seed)).to_dict(orient="records")
            if clustering:
                summary["clustering"] = save("clustering", cluster_scores(X, obs, seed=seed)).to_dict(orient="records")
            if figures and raw is not None:
                R = read_embeddings(Path(raw))
                before = pd.DataFrame(np.asarray(R.X), index=R.obs_names.astype(str)).reindex(W.obs_names.astype(str))
                if not before.isna().any().any():
                    plots.umap_by_batch(before.to_numpy(), X, obs["batch"].astype(str).to_numpy(), part / "umap_batch.png", seed=seed)
        (part / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
        commit_dir(part, out)
    finally:
        shutil.rmtree(part, ignore_errors=True)  # an error leaves nothing behind
    return summary


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
