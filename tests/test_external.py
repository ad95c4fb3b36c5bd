"""Embeddings made elsewhere (RxRx3-core, JUMP) through `map` and the published protocols of `bench`,
on tables built here with the real column schemas, the recall beside efaar-benchmarking 1.0's."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
from cli_helpers import assert_one_line_error, nothing_written, run_cli
from sklearn.utils import Bunch
from test_reference_efaar import annotations, efaar, real_genes  # noqa: F401  (fixtures)


def rxrx3_core_tables(tmp_path, genes: list[str], d: int = 24, seed: int = 0):
    """OpenPhenom_rxrx3_core_embeddings.parquet (well_id, feature_*) and metadata_rxrx3_core.csv,
    in the published columns: 4 gene experiments (2 guides per gene), 1 compound experiment."""
    rng = np.random.default_rng(seed)
    effect = {g: 2 * rng.normal(size=d) for g in genes}
    compounds = [f"RXRX-CPD-{i}" for i in range(6)]
    effect.update(
        {c: effect[genes[i]] + 0.3 * rng.normal(size=d) for i, c in enumerate(compounds)}
    )  # compound i acts like gene i
    meta, X = [], []
    for e in range(5):
        exp = f"gene-{e:03d}" if e < 4 else "compound-001"
        gain, offset = rng.uniform(0.5, 2, d), rng.normal(0, 2, d)
        if e < 4:
            rows = [(g, f"{g}_{k}", "CRISPR", np.nan) for g in genes[e::4] for k in (1, 2)]
        else:
            rows = [("", c, "COMPOUND", conc) for c in compounds for conc in (0.25, 1.0)] + [
                ("", "DMSO_control", "COMPOUND", np.nan)
            ] * 3
        rows += [("EMPTY_control", "EMPTY_control", "CRISPR", np.nan)] * 12
        for k, (gene, treatment, ptype, conc) in enumerate(rows):
            base = effect.get(treatment.split("_")[0] if "_control" not in treatment else "", np.zeros(d))
            X.append((base + rng.normal(size=d)) * gain + offset)
            meta.append(
                {
                    "well_id": f"{exp}_{k // 96 + 1}_{k % 96}",
                    "experiment_name": exp,
                    "plate": k // 96 + 1,
                    "address": f"A{k % 96:02d}",
                    "gene": gene,
                    "treatment": treatment,
                    "SMILES": "C" if ptype == "COMPOUND" else "",
                    "concentration": conc,
                    "perturbation_type": ptype,
                    "cell_type": "HUVEC",
                }
            )
    meta = pd.DataFrame(meta)
    emb = pd.DataFrame(np.asarray(X, np.float32), columns=[f"feature_{i}" for i in range(d)])
    emb.insert(0, "well_id", meta["well_id"])
    # the published parquet can hold several rows of a well (its tiles): the benchmark averages them
    extra = emb.iloc[:5].copy()
    extra.iloc[:, 1:] = extra.iloc[:, 1:].to_numpy() + 1.0
    emb.iloc[:5, 1:] = emb.iloc[:5, 1:].to_numpy() - 1.0
    pd.concat([emb, extra]).sample(frac=1, random_state=0).to_parquet(
        tmp_path / "OpenPhenom_rxrx3_core_embeddings.parquet", index=False
    )
    meta.to_csv(tmp_path / "metadata_rxrx3_core.csv", index=False)
    pd.DataFrame({"compound": compounds, "target": genes[:6]}).to_csv(tmp_path / "targets.csv", index=False)
    return (
        tmp_path / "OpenPhenom_rxrx3_core_embeddings.parquet",
        tmp_path / "metadata_rxrx3_core.csv",
        tmp_path / "targets.csv",
    )


def test_rxrx3_core_through_map_and_the_papers_protocol_equals_efaar_recall(tmp_path, capsys, efaar, annotations):  # noqa: F811
    _, bm = efaar
    genes = real_genes(annotations, 120, seed=3)
    emb, meta, targets = rxrx3_core_tables(tmp_path, genes)
    rc, out, err = run_cli(
        capsys,
        "map",
        "--embeddings",
        emb,
        "--metadata",
        meta,
        "--align",
        "pca_center_scale",
        "--out",
        tmp_path / "m.h5ad",
    )
    assert rc == 0, err
    m = ad.read_h5ad(tmp_path / "m.h5ad")
    wells = ad.read_h5ad(tmp_path / "m.wells.h5ad")
    obs = m.obs
    # guides merged into their gene, EMPTY_control the controls, compound controls left out
    assert set(obs.loc[obs.perturbation_type == "gene", "perturbation"]) == set(genes)
    assert obs.loc[obs.is_control, "perturbation"].tolist() == ["EMPTY_control"]
    assert not wells.obs["perturbation"].str.contains("DMSO").any() and len(wells) == 5 * 12 + 2 * 120 + 12
    assert (obs.perturbation_type == "compound").sum() == 12  # 6 compounds x 2 concentrations
    assert m.uns["provenance"]["embedding_layout"] == "rxrx3-core"
    # a well's several rows are averaged: the first well's features are its rows' mean
    from morphoscale.maps.external import read_external

    raw = pd.read_parquet(emb)
    twice = raw["well_id"][raw["well_id"].duplicated()].iloc[0]
    wells_in = read_external(emb, meta)
    np.testing.assert_allclose(
        np.asarray(wells_in[twice].X)[0],
        raw[raw["well_id"] == twice].iloc[:, 1:].to_numpy(np.float64).mean(axis=0),
        rtol=1e-6,
    )
    assert wells_in.n_obs == len(raw["well_id"].unique()) - 3  # the 3 DMSO_control wells left out
    rc, out, err = run_cli(
        capsys,
        "bench",
        "--map",
        tmp_path / "m.h5ad",
        "--out",
        tmp_path / "b",
        "--protocol",
        "rxrx3-core",
        "--compound-targets",
        targets,
        "--quiet",
    )
    assert rc == 0, err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert (
        summary["metrics"] == ["recall", "compound_gene", "map_target_consistency"]
        and summary["protocol"]["name"] == "rxrx3-core"
    )
    assert summary["compound_gene"]["mean_auc"] > 0.9  # each compound acts like its target
    assert "published numbers" in out and "OpenPhenom" in out
    # the paper's recall: CRISPR-only map, efaar 1.0's own benchmark on the same profiles
    g = (obs.perturbation_type == "gene").to_numpy()
    agg = Bunch(metadata=obs[g].reset_index(drop=True), features=pd.DataFrame(np.asarray(m.X, np.float64)[g]))
    theirs = bm.known_relationship_benchmark(agg, "perturbation", benchmark_data_dir=str(annotations)).set_index(
        "source"
    )
    ours = pd.DataFrame(summary["recall"])
    for src in theirs.index:
        for lo, hi in ((5.0, 95.0), (10.0, 90.0)):
            row = ours[(ours.source == src) & (ours.lower == lo)].iloc[0]
            assert row.n_pairs == theirs.loc[src, "query_distribution_size"]
            assert row.recall == theirs.loc[src, f"recall_{lo / 100}_{hi / 100}"], (src, lo)
    # the notebook's protocol puts compound profiles into the null too: other numbers, said so
    rc, _, err = run_cli(
        capsys,
        "bench",
        "--map",
        tmp_path / "m.h5ad",
        "--out",
        tmp_path / "nb",
        "--protocol",
        "rxrx3-core-notebook",
        "--quiet",
    )
    nb = json.loads((tmp_path / "nb" / "summary.json").read_text())
    assert (
        rc == 0 and nb["protocol"]["recall_profiles"] == "all" and nb["recall"][0]["n_genes"] >= ours["n_genes"].iloc[0]
    )


def jump_table(tmp_path, genes: list[str], d: int = 12, seed: int = 1) -> pd.DataFrame:
    """cpg0016-style profiles: Metadata_* columns beside CellProfiler-named features."""
    rng = np.random.default_rng(seed)
    rows, X = [], []
    effect = {p: 2 * rng.normal(size=d) for p in genes + ["JCP2022_000001", "JCP2022_000002"]}
    for s, source in enumerate(("source_4", "source_13")):
        for plate in range(2):
            for k, g in enumerate(genes):
                X.append(effect[g] + rng.normal(size=d))
                rows.append(
                    {
                        "Metadata_Source": source,
                        "Metadata_Plate": f"P{s}{plate}",
                        "Metadata_Well": f"A{k:02d}",
                        "Metadata_JCP2022": f"JCP2022_8{k:05d}",
                        "Metadata_Symbol": g,
                        "Metadata_pert_type": "trt",
                    }
                )
            for c in ("JCP2022_000001", "JCP2022_000002"):
                X.append(effect[c] + rng.normal(size=d))
                rows.append(
                    {
                        "Metadata_Source": source,
                        "Metadata_Plate": f"P{s}{plate}",
                        "Metadata_Well": "B01",
                        "Metadata_JCP2022": c,
                        "Metadata_Symbol": None,
                        "Metadata_pert_type": "trt",
                    }
                )
            for _ in range(10):
                X.append(rng.normal(size=d))
                rows.append(
                    {
                        "Metadata_Source": source,
                        "Metadata_Plate": f"P{s}{plate}",
                        "Metadata_Well": "C01",
                        "Metadata_JCP2022": "JCP2022_033924",
                        "Metadata_Symbol": None,
                        "Metadata_pert_type": "negcon",
                    }
                )
    feats = pd.DataFrame(np.asarray(X), columns=[f"Cells_AreaShape_F{i}" for i in range(d)])
    return pd.concat([pd.DataFrame(rows), feats], axis=1)


def test_jump_profiles_through_map_and_the_jump_protocol(tmp_path, capsys):
    table = jump_table(tmp_path, ["PSMA1", "PSMA2", "PSMA3", "POLR2A", "POLR2B", "SNRPE"])
    table.to_parquet(tmp_path / "profiles.parquet", index=False)
    rc, _, err = run_cli(
        capsys,
        "map",
        "--embeddings",
        tmp_path / "profiles.parquet",
        "--align",
        "center_scale",
        "--out",
        tmp_path / "m.h5ad",
    )
    assert rc == 0, err
    w = ad.read_h5ad(tmp_path / "m.wells.h5ad")
    assert set(w.obs.loc[w.obs.perturbation_type == "gene", "perturbation"]) == {
        "PSMA1",
        "PSMA2",
        "PSMA3",
        "POLR2A",
        "POLR2B",
        "SNRPE",
    }
    assert set(w.obs.loc[w.obs.perturbation_type == "compound", "perturbation"]) == {"JCP2022_000001", "JCP2022_000002"}
    assert w.obs["is_control"].sum() == 40 and set(w.obs["batch"]) == {"source_4", "source_13"} and w.n_vars == 12
    (tmp_path / "t.csv").write_text("compound,target\nJCP2022_000001,PSMB1\nJCP2022_000002,PSMB1\n")
    rc, _, err = run_cli(
        capsys,
        "bench",
        "--map",
        tmp_path / "m.h5ad",
        "--out",
        tmp_path / "b",
        "--protocol",
        "jump",
        "--compound-targets",
        tmp_path / "t.csv",
        "--quiet",
    )
    assert rc == 0, err
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["metrics"] == ["map_consistency", "map_target_consistency", "map_activity"]
    assert s["map_activity"]["fraction_retrieved"] == 1.0 and s["map_activity"]["n"] == 8


def test_external_tables_bad_inputs_are_one_line(tmp_path, capsys):
    table = jump_table(tmp_path, ["PSMA1", "PSMA2"])
    table.to_csv(tmp_path / "p.csv", index=False)
    cases = [
        (["--column", "dose=Metadata_X"], "unknown role"),
        (["--column", "batch=Metadata_Nope"], "no column 'Metadata_Nope'"),
        (["--control", "ctrl"], "no negative-control well"),
        (["--layout", "cellpainting"], "--layout cellpainting: unknown"),
        (["--metadata", tmp_path / "missing.csv"], "missing.csv: metadata file not found"),
    ]
    for args, needle in cases:
        rc, _, err = run_cli(capsys, "map", "--embeddings", tmp_path / "p.csv", "--out", tmp_path / "m.h5ad", *args)
        assert_one_line_error(rc, err, needle)
    (tmp_path / "e.h5ad").write_text("")
    rc, _, err = run_cli(
        capsys, "map", "--embeddings", tmp_path / "e.h5ad", "--out", tmp_path / "m.h5ad", "--layout", "jump"
    )
    assert_one_line_error(rc, err, "an .h5ad carries its own obs")
    assert nothing_written(tmp_path / "m.h5ad")


def test_any_table_with_its_roles_named(tmp_path, capsys):
    rng = np.random.default_rng(2)
    rows = [
        {"plate": f"P{p}", "well": f"W{k}", "gene": g, "kind": "gene"}
        for p in range(3)
        for k, g in enumerate(["PSMA1", "PSMA2", "PSMA3"])
    ]
    rows += [{"plate": f"P{p}", "well": f"C{k}", "gene": "NTC", "kind": "control"} for p in range(3) for k in range(8)]
    table = pd.DataFrame(rows)
    for i in range(6):
        table[f"f{i}"] = rng.normal(size=len(table))
    table.to_csv(tmp_path / "wells.csv", index=False)
    rc, _, err = run_cli(
        capsys,
        "map",
        "--embeddings",
        tmp_path / "wells.csv",
        "--layout",
        "columns",
        "--column",
        "perturbation=gene",
        "--column",
        "type=kind",
        "--column",
        "control=kind",
        "--column",
        "batch=plate",
        "--column",
        "plate=plate",
        "--column",
        "well=well",
        "--align",
        "center_scale",
        "--out",
        tmp_path / "m.h5ad",
    )
    assert rc == 0, err
    w = ad.read_h5ad(tmp_path / "m.wells.h5ad")
    assert (
        w.n_vars == 6
        and w.obs["is_control"].sum() == 24
        and set(w.obs.loc[~w.obs.is_control, "perturbation"]) == {"PSMA1", "PSMA2", "PSMA3"}
    )
    rc, _, err = run_cli(
        capsys,
        "map",
        "--embeddings",
        tmp_path / "wells.csv",
        "--layout",
        "columns",
        "--column",
        "perturbation=gene",
        "--out",
        tmp_path / "n.h5ad",
    )
    assert_one_line_error(rc, err, "no batch column")
