"""Aggregation and every bench metric against an independent computation."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli
from scipy.stats import ks_2samp

from morphoscale.bench.complexes import complex_ks
from morphoscale.bench.compounds import compound_gene_retrieval, drug_similarity_score
from morphoscale.bench.probes import drug_vs_control
from morphoscale.bench.replicates import energy_distance, perturbation_magnitude, replicate_consistency
from morphoscale.bench.retrieval import activity_average_precision, phenotypic_activity
from morphoscale.maps.aggregate import aggregate


def wells(seed=0, n_genes=12, reps=4, n_ctrl=30, d=5, n_plates=3):
    rng = np.random.default_rng(seed)
    rows, X = [], []
    for p in range(n_plates):
        for g in range(n_genes):
            effect = np.full(d, 3.0 * (g % 3 == 0)) * (1 + g % 2)
            for r in range(reps // n_plates + 1):
                X.append(effect + rng.normal(size=d))
                rows.append(
                    dict(perturbation=f"G{g}", perturbation_type="gene", is_control=False, batch=f"b{p}", plate=f"P{p}")
                )
        for c in range(n_ctrl // n_plates):
            X.append(rng.normal(size=d))
            rows.append(
                dict(perturbation="NTC", perturbation_type="control", is_control=True, batch=f"b{p}", plate=f"P{p}")
            )
    return np.array(X), pd.DataFrame(rows)


def test_aggregate_mean_and_median_per_perturbation_with_controls_apart():
    X, obs = wells()
    for method, fn in (("mean", "mean"), ("median", "median")):
        P, pobs = aggregate(X, obs, method)
        expected = pd.DataFrame(X).groupby(obs["perturbation"].to_numpy()).agg(fn)
        for k, name in enumerate(pobs["perturbation"]):
            np.testing.assert_allclose(P[k], expected.loc[name].to_numpy(), rtol=1e-6)
        assert pobs.loc[pobs.perturbation == "NTC", "is_control"].item()
        assert pobs["n_rows"].sum() == len(X)


def test_aggregate_keeps_compound_concentrations_apart():
    X = np.arange(12, dtype=float).reshape(6, 2)
    obs = pd.DataFrame(
        {
            "perturbation": ["c1", "c1", "c1", "g1", "g1", "NTC"],
            "perturbation_type": ["compound"] * 3 + ["gene"] * 2 + ["control"],
            "is_control": [False] * 5 + [True],
            "concentration": [0.1, 0.1, 1.0, np.nan, np.nan, np.nan],
        }
    )
    P, pobs = aggregate(X, obs, "mean")
    assert list(pobs.index) == ["c1@0.1", "c1@1.0", "g1", "NTC"]
    np.testing.assert_allclose(P[0], X[:2].mean(0))


def test_replicate_consistency_statistic_and_p_value():
    X, obs = wells()
    res = replicate_consistency(X, obs, n_null=200).set_index("perturbation")
    idx = np.flatnonzero(obs.perturbation == "G3")
    U = X[idx] / np.linalg.norm(X[idx], axis=1, keepdims=True)
    expected = np.mean([U[i] @ U[j] for i in range(len(idx)) for j in range(len(idx)) if i != j])
    assert res.loc["G3", "consistency"] == pytest.approx(expected)
    assert res.loc["G3", "p_value"] < 0.05  # a strong, consistent effect
    assert res.loc["G1", "p_value"] > 0.05  # no effect


def test_energy_distance_matches_the_definition():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(5, 3)), rng.normal(size=(7, 3)) + 1

    def mean_dist(P, Q):
        return np.mean([np.linalg.norm(p - q) for p in P for q in Q])

    expected = 2 * mean_dist(A, B) - mean_dist(A, A) - mean_dist(B, B)
    assert energy_distance(A, B) == pytest.approx(expected)
    X, obs = wells()
    mag = perturbation_magnitude(X, obs, n_null=100).set_index("perturbation")
    assert mag.loc["G3", "p_value"] < 0.05 and mag.loc["G1", "p_value"] > 0.05


def test_complex_ks_matches_scipy():
    rng = np.random.default_rng(2)
    genes = [f"G{i}" for i in range(40)]
    X = rng.normal(size=(40, 6))
    X[:12] += 3 * rng.normal(size=6)
    res = complex_ks(X, genes, {"big": genes[:12], "small": genes[20:25]}, min_genes=10)
    assert list(res["complex"]) == ["big"]
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    within = S[:12, :12][np.triu_indices(12, 1)]
    between = S[:12, 12:].ravel()
    ref = ks_2samp(within, between)
    assert res["ks_statistic"].item() == pytest.approx(ref.statistic) and res["p_value"].item() == pytest.approx(
        ref.pvalue
    )


def test_compound_gene_auc_is_the_rank_statistic():
    rng = np.random.default_rng(3)
    G = rng.normal(size=(30, 4))
    genes = [f"G{i}" for i in range(30)]
    C = G[[4]] + 0.1 * rng.normal(size=(1, 4))
    res = compound_gene_retrieval(C, ["cpd"], G, genes, {"cpd": ["G4", "G9", "NOTINMAP"]})
    U = G / np.linalg.norm(G, axis=1, keepdims=True)
    s = U @ (C[0] / np.linalg.norm(C[0]))
    pos, neg = s[[4, 9]], np.delete(s, [4, 9])
    expected = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert res["auc"].item() == pytest.approx(expected) and res["n_targets"].item() == 2
    assert res["random_average_precision"].item() == pytest.approx(2 / 30)


def test_drug_similarity_score():
    C = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0]])
    out = drug_similarity_score(C, ["a", "b", "c"], np.array([[-1.0, -1.0]]), {"a": ["T"], "b": ["T"], "c": ["U"]})
    u = C / np.linalg.norm(C, axis=1, keepdims=True)
    assert out["n_pairs"] == 1 and out["median_distance_shared_target"] == pytest.approx(1 - u[0] @ u[1])
    assert out["ratio"] < 1


def test_average_precision_matches_a_manual_ranking():
    X, obs = wells(n_genes=4, reps=3)
    ap = activity_average_precision(X, obs)
    i = int(np.flatnonzero(obs.perturbation == "G0")[0])
    pos = set(np.flatnonzero(obs.perturbation == "G0")) - {i}
    cand = sorted(pos | set(np.flatnonzero(obs.is_control)))
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    order = sorted(cand, key=lambda j: -(U[i] @ U[j]))
    hits, precisions = 0, []
    for rank, j in enumerate(order, start=1):
        if j in pos:
            hits += 1
            precisions.append(hits / rank)
    got = ap.loc[ap["row"] == i, "average_precision"].item()
    assert got == pytest.approx(np.mean(precisions))
    table = phenotypic_activity(X, obs, null_size=500).set_index("perturbation")
    assert table.loc["G0", "mean_average_precision"] > table.loc["G1", "mean_average_precision"]


def test_drug_vs_control_probes_use_probabilities_and_plate_groups():
    X, obs = wells(n_genes=6)
    obs["perturbation_type"] = np.where(obs.is_control, "control", "compound")
    res = drug_vs_control(X, obs).set_index("probe")
    assert set(res.index) == {"linear", "mlp"} and (res["n_groups"] == 3).all()
    assert 0.5 < res.loc["linear", "roc_auc"] <= 1.0
    rng = np.random.default_rng(0)
    noise = rng.normal(size=X.shape)
    res_noise = drug_vs_control(noise, obs).set_index("probe")
    assert abs(res_noise.loc["linear", "roc_auc"] - 0.5) < 0.2


def _write_embeddings(path, X, obs):
    obs = obs.copy()
    obs.index = [f"w{i}" for i in range(len(obs))]
    ad.AnnData(X=X.astype(np.float32), obs=obs).write_h5ad(path)


def _bench_inputs(tmp_path, capsys):
    X, obs = wells(n_genes=12)
    genes = [
        "POLR2A",
        "POLR2B",
        "POLR2C",
        "POLR2D",
        "POLR2E",
        "POLR2F",
        "SNRPE",
        "SNRPF",
        "SNRPG",
        "PSMA1",
        "PSMA2",
        "PSMA3",
    ]
    obs["perturbation"] = obs["perturbation"].map(lambda p: genes[int(p[1:])] if p.startswith("G") else p)
    _write_embeddings(tmp_path / "emb.h5ad", X, obs)
    rc, _, err = run_cli(
        capsys, "map", "--embeddings", tmp_path / "emb.h5ad", "--align", "tvn", "--out", tmp_path / "m.h5ad"
    )
    assert rc == 0, err
    return tmp_path / "m.h5ad"


def test_map_and_bench_end_to_end(tmp_path, capsys, examples_dir):
    m = ad.read_h5ad(_bench_inputs(tmp_path, capsys))
    assert m.n_obs == 13 and m.obs["is_control"].sum() == 1 and m.uns["provenance"]["align"] == "tvn"
    kept = m.uns["alignment"]  # what the aligner kept, for the record
    assert (
        kept["method"] == "tvn"
        and kept["n_features_in"] == 5
        and kept["n_components"] == 5
        and kept["n_controls"] == 30
    )
    assert (
        dict(kept["controls_per_batch"]) == {"b0": 10, "b1": 10, "b2": 10}
        and "fewer control wells than the 5" not in kept["warnings"]
    )
    assert (tmp_path / "m.wells.h5ad").exists()
    (tmp_path / "mine.csv").write_text("entity1,entity2\nPOLR2A,POLR2B\nPOLR2A,SNRPE\n")
    rc, out, err = run_cli(
        capsys,
        "bench",
        "--map",
        tmp_path / "m.h5ad",
        "--out",
        tmp_path / "b",
        "--pairs",
        f"mine={tmp_path / 'mine.csv'}",
    )
    assert rc == 0, err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    sources = {r["source"] for r in summary["recall"]}
    assert sources == {"CORUM", "HuMAP", "Reactome", "SIGNOR", "StringDB", "mine"}
    mine = [r for r in summary["recall"] if r["source"] == "mine" and r["lower"] == 5.0][0]
    # 12 genes, 66 null pairs: efaar's rule recalls the 3 lowest and 3 highest of the null itself
    assert mine["n_pairs"] == 2 and mine["random_recall"] == pytest.approx(6 / 66)
    assert mine["ci_low"] <= mine["recall"] <= mine["ci_high"]
    assert summary["estimates"]["recall/mine/5"]["value"] == mine["recall"]
    for f in ("recall.csv", "consistency.csv", "magnitude.csv", "map_activity.csv", "recall.png"):
        assert (tmp_path / "b" / f).exists(), f
    assert "known-relationship recall" in out


def test_map_bad_inputs(tmp_path, capsys):
    X, obs = wells()
    X[3, 1] = np.nan
    _write_embeddings(tmp_path / "nan.h5ad", X, obs)
    rc, _, err = run_cli(capsys, "map", "--embeddings", tmp_path / "nan.h5ad", "--out", tmp_path / "m.h5ad")
    assert_one_line_error(rc, err, "nan.h5ad: 1 rows have NaN or infinite values (first: obs 'w3')")
    X, obs = wells(n_genes=1)
    _write_embeddings(tmp_path / "one.h5ad", X, obs)
    rc, _, err = run_cli(capsys, "map", "--embeddings", tmp_path / "one.h5ad", "--out", tmp_path / "m.h5ad")
    assert_one_line_error(rc, err, "the map has 1 perturbation(s) besides controls; at least 2 are needed")
    X, obs = wells()
    _write_embeddings(tmp_path / "nob.h5ad", X, obs.drop(columns=["batch"]))
    rc, _, err = run_cli(capsys, "map", "--embeddings", tmp_path / "nob.h5ad", "--out", tmp_path / "m.h5ad")
    assert_one_line_error(rc, err, "nob.h5ad: obs lacks column(s) batch")
    rc, _, err = run_cli(capsys, "map", "--embeddings", tmp_path / "missing.h5ad", "--out", tmp_path / "m.h5ad")
    assert_one_line_error(rc, err, "missing.h5ad: embeddings file not found")
    assert not (tmp_path / "m.h5ad").exists() and not (tmp_path / "m.wells.h5ad").exists()


def test_phenotypic_consistency_retrieves_groups_with_shared_signal():
    from morphoscale.bench.retrieval import phenotypic_consistency

    rng = np.random.default_rng(5)
    genes = [f"G{i}" for i in range(30)]
    X = rng.normal(size=(30, 8))
    X[:8] += 4 * rng.normal(size=8)  # group A shares a strong direction
    groups = {"A": genes[:8], "B": genes[8:16], "C": genes[16:24]}  # B and C: no shared signal
    res = phenotypic_consistency(X, genes, groups, null_size=2000).set_index("group")
    assert res.loc["A", "below_corrected_p"] and res.loc["A", "mean_average_precision"] > 0.8
    assert not res.loc["B", "below_corrected_p"] and not res.loc["C", "below_corrected_p"]


def test_cluster_scores_find_separated_blobs_and_score_on_the_embeddings():
    from sklearn.metrics import silhouette_score

    from morphoscale.bench.probes import cluster_scores

    rng = np.random.default_rng(6)
    centers = 10 * rng.normal(size=(3, 12))
    X = np.vstack([c + rng.normal(size=(40, 12)) for c in centers])
    obs = pd.DataFrame({"cell_type": ["U2OS"] * 120})
    res = cluster_scores(X, obs, min_cluster_size=10).iloc[0]
    assert res["n_clusters"] == 3 and res["noise_fraction"] < 0.1
    truth = np.repeat(np.arange(3), 40)
    assert res["silhouette"] == pytest.approx(silhouette_score(X, truth, metric="cosine"), abs=0.05)


def test_magnitude_null_draws_are_energy_distances_of_control_subsets():
    from morphoscale.bench.replicates import _ControlNull, _sample_rows

    rng = np.random.default_rng(7)
    C, plates = rng.normal(size=(30, 4)), np.repeat(["a", "b", "c"], 10)
    got = _ControlNull(C, plates).draw((("a", 2), ("c", 3)), 6, np.random.default_rng(5))
    r = np.random.default_rng(5)
    picks = np.hstack([_sample_rows(np.arange(10), 2, 6, r), _sample_rows(np.arange(20, 30), 3, 6, r)])
    assert all(set(p[:2]) <= set(range(10)) and set(p[2:]) <= set(range(20, 30)) and len(set(p)) == 5 for p in picks)
    expected = [energy_distance(C[p], C[np.setdiff1d(np.arange(30), p)]) for p in picks]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    X, obs = wells()
    mag = perturbation_magnitude(X, obs, n_null=50).set_index("perturbation")
    ctrl = np.flatnonzero(obs.is_control)
    g3 = np.flatnonzero(obs.perturbation == "G3")
    assert mag.loc["G3", "energy_distance"] == pytest.approx(energy_distance(X[g3], X[ctrl]), rel=1e-12)


def test_drug_similarity_pairs_are_all_pairs_sharing_a_target():
    from morphoscale.bench.compounds import shared_target_pairs

    rng = np.random.default_rng(8)
    compounds = [f"c{i}" for i in range(40)]
    targets = {c: list(rng.choice(list("ABCDEFGH"), rng.integers(0, 3), replace=False)) for c in compounds}
    i, j = shared_target_pairs(compounds, targets)
    brute = [
        (a, b) for a in range(40) for b in range(a + 1, 40) if set(targets[compounds[a]]) & set(targets[compounds[b]])
    ]
    assert list(zip(i.tolist(), j.tolist())) == brute


def test_bench_runs_the_metrics_asked_for_and_records_what_each_cost(tmp_path, capsys):
    m = _bench_inputs(tmp_path, capsys)
    rc, _, err = run_cli(capsys, "bench", "--map", m, "--out", tmp_path / "all")
    assert rc == 0, err
    full = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert {"recall", "complexes", "consistency", "magnitude", "map_activity", "total", "read"} <= set(full["cost"])
    assert all(c["seconds"] >= 0 and c["peak_rss_mb"] > 0 for c in full["cost"].values())
    assert "clustering" not in full["metrics"] and "bench: map_activity" in err  # a line per metric as it finishes
    rc, _, err = run_cli(capsys, "bench", "--map", m, "--out", tmp_path / "r", "--metrics", "recall", "--quiet")
    assert rc == 0 and err == ""
    only = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert only["metrics"] == ["recall"] and set(only["cost"]) == {"read", "recall", "total"}
    assert not (tmp_path / "r" / "consistency.csv").exists() and not (tmp_path / "r" / "map_activity.csv").exists()
    assert only["recall"] == full["recall"]  # the same numbers whether run alone or with everything
    rc, _, err = run_cli(capsys, "bench", "--map", m, "--out", tmp_path / "q", "--quick", "--quiet")
    quick = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert rc == 0 and "map_activity" not in quick and quick["consistency"] == full["consistency"]
    # named but not supported by this map: skipped with the reason; left out silently only by default
    rc, _, err = run_cli(
        capsys, "bench", "--map", m, "--out", tmp_path / "c", "--metrics", "recall,compound_gene", "--quiet"
    )
    assert (
        rc == 0 and "compound" in json.loads((tmp_path / "c" / "summary.json").read_text())["compound_gene"]["skipped"]
    )
    assert "compound_gene" not in full
    rc, _, err = run_cli(capsys, "bench", "--map", m, "--out", tmp_path / "bad", "--metrics", "recall,recal")
    assert_one_line_error(rc, err, "--metrics: unknown metric 'recal'", "map_activity")
    rc, _, err = run_cli(capsys, "bench", "--map", m, "--out", tmp_path / "bad", "--metrics", "recall", "--quick")
    assert_one_line_error(rc, err, "--metrics, quick and protocol: give one of them")
    assert not (tmp_path / "bad").exists()


def test_compound_gene_auc_and_ap_equal_sklearn_with_ties_and_blocks():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(9)
    G = np.round(rng.normal(size=(25, 3)), 0) + 0.5  # coarse values: many tied cosines
    genes = [f"G{i}" for i in range(25)]
    C = np.round(rng.normal(size=(7, 3)), 0) + 0.01
    compounds = [f"c{i}" for i in range(7)]
    targets = {c: list(rng.choice(genes, rng.integers(1, 5), replace=False)) for c in compounds}
    targets["c0"] = ["G3", "G3", "NOTINMAP"]
    res = compound_gene_retrieval(C, compounds, G, genes, targets, block=3).set_index("compound")
    U, V = G / np.linalg.norm(G, axis=1, keepdims=True), C / np.linalg.norm(C, axis=1, keepdims=True)
    for k, c in enumerate(compounds):
        y = np.isin(genes, targets[c])
        s = U @ V[k]
        assert len(np.unique(s)) < 25
        assert res.loc[c, "auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert res.loc[c, "average_precision"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert res.loc[c, "n_targets"] == y.sum()


def test_drug_vs_control_samples_compound_wells_past_the_cap():
    X, obs = wells(n_genes=6)
    obs["perturbation_type"] = np.where(obs.is_control, "control", "compound")
    res = drug_vs_control(X, obs, max_wells=40).set_index("probe")
    n_ctrl, n_cpd = int(obs.is_control.sum()), int((~obs.is_control).sum())
    assert (res["n_wells"] == 40).all() and (res["n_compound_wells"] == n_cpd).all() and n_ctrl + n_cpd > 40
    full = drug_vs_control(X, obs).set_index("probe")
    assert (full["n_wells"] == n_ctrl + n_cpd).all()
