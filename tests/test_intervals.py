"""Intervals and paired differences (jackknife), the truth metrics, and a bench that never dies
on a small screen: each checked against an independent computation."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_cli
from scipy.stats import spearmanr

from morphoscale.bench import summary
from morphoscale.bench.intervals import estimate, mean_replicates, paired_difference, ratio_replicates
from morphoscale.bench.truth import _r2_by_unit, truth_cosine_correlation


def test_jackknife_of_a_mean_is_the_standard_error_of_the_mean():
    x = np.random.default_rng(0).normal(size=50)
    e = estimate(x.mean(), mean_replicates(x))
    assert e.se == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)))
    assert e.ci_low == pytest.approx(x.mean() - 1.959964 * e.se, abs=1e-6) and e.n_units == 50


def test_fractions_of_independent_units_take_the_wilson_interval():
    from statsmodels.stats.proportion import proportion_confint

    from morphoscale.bench.intervals import fraction_with_interval

    for k, n in ((0, 60), (3, 60), (60, 60), (17, 40)):
        est, reps = fraction_with_interval(np.r_[np.ones(k), np.zeros(n - k)], range(n), "f")
        lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert est.value == pytest.approx(k / n) and (est.ci_low, est.ci_high) == pytest.approx((lo, hi))
        assert len(reps) == n  # the jackknife replicates stay, for paired differences
    assert est.ci_high > est.ci_low > 0


def test_ratio_replicates_leave_each_unit_out():
    num, den = np.array([1.0, 0, 2, 3]), np.array([2.0, 1, 2, 4])
    reps = ratio_replicates(num.sum(), den.sum(), num, den)
    np.testing.assert_allclose(reps, [(num.sum() - num[i]) / (den.sum() - den[i]) for i in range(4)])
    assert np.isnan(ratio_replicates(1.0, 1.0, [1.0], [1.0])[0])  # no pairs left: undefined, not 0


def test_paired_difference_is_tighter_than_unpaired_when_the_maps_share_units():
    """Two maps with a shared per-gene component: the paired interval removes it."""
    rng = np.random.default_rng(1)
    shared = rng.normal(size=200)
    a, b = shared + 0.1 * rng.normal(size=200) + 0.05, shared + 0.1 * rng.normal(size=200)
    units = [f"g{i}" for i in range(200)]
    ra, rb = pd.Series(mean_replicates(a), index=units), pd.Series(mean_replicates(b), index=units)
    est, why = paired_difference(a.mean(), ra, b.mean(), rb)
    assert why == "" and est.value == pytest.approx(a.mean() - b.mean())
    assert est.se == pytest.approx((a - b).std(ddof=1) / np.sqrt(200))
    unpaired = np.hypot(estimate(a.mean(), ra).se, estimate(b.mean(), rb).se)
    assert est.se < unpaired / 3 and est.ci_low > 0  # the shift of 0.05 is resolved only paired
    est, why = paired_difference(a.mean(), ra, b.mean(), rb.iloc[1:])
    assert est is None and "different units" in why


def test_decoding_r2_replicates_equal_recomputing_without_each_unit():
    rng = np.random.default_rng(2)
    Y = rng.normal(size=(40, 3))
    P = Y + rng.normal(size=(40, 3))
    units = np.repeat([f"u{i}" for i in range(10)], 4)
    r2, reps, names = _r2_by_unit(Y, P, units)

    def mean_r2(keep):
        y, p = Y[keep], P[keep]
        return np.mean(1 - ((y - p) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0))

    np.testing.assert_allclose(r2.mean(), mean_r2(np.ones(40, bool)))
    np.testing.assert_allclose(reps, [mean_r2(units != u) for u in names])


def test_cosine_correlation_is_spearman_over_gene_pairs_with_a_phenotype():
    rng = np.random.default_rng(3)
    params = [f"p{i}" for i in range(5)]
    T = rng.normal(size=(30, 5))
    T[4] = 0  # no phenotype: left out
    G = T @ rng.normal(size=(5, 8)) + 0.5 * rng.normal(size=(30, 8))
    genes = [f"g{i}" for i in range(30)]
    phen = pd.DataFrame(T, columns=params).assign(gene=genes)
    est, reps, n = truth_cosine_correlation(G, genes, phen, params)
    keep = np.r_[0:4, 5:30]
    U, V = (
        G[keep] / np.linalg.norm(G[keep], axis=1, keepdims=True),
        T[keep] / np.linalg.norm(T[keep], axis=1, keepdims=True),
    )
    iu = np.triu_indices(len(keep), 1)
    assert n == 29 and est.value == pytest.approx(spearmanr((U @ U.T)[iu], (V @ V.T)[iu]).statistic)
    assert est.ci_low < est.value < est.ci_high and len(reps) == 29
    shuffled, _, _ = truth_cosine_correlation(G[rng.permutation(30)], genes, phen, params)
    assert est.value > 0.5 and abs(shuffled.value) < 0.2


def test_truth_metrics_leave_out_a_cluster_of_genes_that_share_a_phenotype():
    """Genes of one complex share a latent phenotype: the jackknife leaves the cluster out
    whole (each replicate recomputed without it), and says so beside the interval."""
    rng = np.random.default_rng(5)
    params = [f"p{i}" for i in range(5)]
    latent = rng.normal(size=(8, 5))
    cluster_of = np.repeat(np.arange(8), 4)  # 8 clusters of 4 genes
    T = latent[cluster_of] + 0.2 * rng.normal(size=(32, 5))
    G = T @ rng.normal(size=(5, 8)) + 0.5 * rng.normal(size=(32, 8))
    genes = [f"g{i}" for i in range(32)]
    phen = pd.DataFrame(T, columns=params).assign(gene=genes)
    clusters = pd.Series([f"cluster{c}" for c in cluster_of], index=genes)
    est, reps, n = truth_cosine_correlation(G, genes, phen, params, clusters)
    assert n == 32 and est.n_units == 8 and est.unit == "cluster of genes sharing a phenotype"
    per_gene, _, _ = truth_cosine_correlation(G, genes, phen, params)
    assert per_gene.value == est.value and per_gene.n_units == 32 and per_gene.unit == "gene"
    iu = np.triu_indices(32, 1)
    U = G / np.linalg.norm(G, axis=1, keepdims=True)
    V = T / np.linalg.norm(T, axis=1, keepdims=True)
    a, b = (U @ U.T)[iu], (V @ V.T)[iu]
    for c in range(8):
        keep = (cluster_of[iu[0]] != c) & (cluster_of[iu[1]] != c)
        got = reps.set_index("unit").loc[f"cluster{c}", "value"]
        assert got == pytest.approx(spearmanr(a[keep], b[keep]).statistic)
    assert est.se > per_gene.se  # pairs inside a cluster move together


def test_a_compound_joins_the_cluster_of_its_targets():
    from morphoscale.bench.clusters import perturbation_clusters

    clusters = pd.Series(["cluster0", "cluster0", "cluster1", "cluster2"], index=["A", "B", "C", "D"])
    targets = pd.DataFrame({"compound": ["X", "Y", "Y"], "target": ["A", "C", "D"]})
    got = perturbation_clusters(np.array(["A", "B", "C", "D", "X", "Y", "E", "CPD9"]), clusters, targets)
    # Y targets C and D: their clusters become one unit, named by one of them
    assert list(got[:2]) == ["cluster0", "cluster0"] and got[4] == "cluster0"
    assert got[2] == got[3] == got[5] and got[2] in ("cluster1", "cluster2")
    assert list(got[6:]) == ["E", "CPD9"]  # no cluster, no target: their own units


def test_the_simulated_screens_clusters_hold_every_complex_and_pair(sim_screen):
    from morphoscale.bench.clusters import truth_units

    gt = sim_screen / "ground_truth"
    genes = pd.read_csv(gt / "phenotypes.csv")["gene"].astype(str).tolist()
    clusters, targets = truth_units(gt, genes)
    assert set(clusters.index) == set(genes) and targets is not None and len(targets)
    for _, members in pd.read_csv(gt / "complexes.csv").groupby("complex")["gene"]:
        assert clusters.reindex(members.astype(str)).dropna().nunique() == 1
    for a, b in pd.read_csv(gt / "pairs.csv")[["gene1", "gene2"]].astype(str).itertuples(index=False):
        if a in clusters.index and b in clusters.index:
            assert clusters[a] == clusters[b]
    assert 1 < clusters.nunique() < len(genes)


def small_map(tmp_path):
    """A screen too small for several metrics: 4 genes, 2 compounds, 2 plates, 12 control wells."""
    rng = np.random.default_rng(4)
    rows, X = [], []
    for p in range(2):
        for g in ["POLR2A", "POLR2B", "SNRPE", "PSMA1", "c1", "c2"]:
            X.append(rng.normal(size=6))
            rows.append(
                dict(
                    perturbation=g,
                    perturbation_type="compound" if g.startswith("c") else "gene",
                    is_control=False,
                    batch=f"b{p}",
                    plate=f"P{p}",
                    well=f"A{len(rows)}",
                )
            )
        for _ in range(6):
            X.append(rng.normal(size=6))
            rows.append(
                dict(
                    perturbation="NTC",
                    perturbation_type="control",
                    is_control=True,
                    batch=f"b{p}",
                    plate=f"P{p}",
                    well=f"A{len(rows)}",
                )
            )
    obs = pd.DataFrame(rows)
    obs.index = [f"w{i}" for i in range(len(obs))]
    ad.AnnData(X=np.array(X, np.float32), obs=obs).write_h5ad(tmp_path / "emb.h5ad")
    return tmp_path / "emb.h5ad"


def test_bench_on_a_small_screen_skips_what_cannot_run_and_says_why(tmp_path, capsys, examples_dir):
    emb = small_map(tmp_path)
    (tmp_path / "targets.csv").write_text("compound,target\nc1,NOTINMAP\nc2,NOTINMAP\n")
    rc, _, err = run_cli(capsys, "map", "--embeddings", emb, "--out", tmp_path / "m.h5ad")
    assert rc == 0, err
    rc, out, err = run_cli(
        capsys,
        "bench",
        "--map",
        tmp_path / "m.h5ad",
        "--out",
        tmp_path / "b",
        "--compound-targets",
        tmp_path / "targets.csv",
    )
    assert rc == 0, err
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["recall"][0]["source"] == "CORUM"  # recall runs on 4 genes
    skipped = summary.read(tmp_path / "b").skipped()
    assert "complexes" in skipped and "10 or more genes" in skipped["complexes"]
    assert "annotated target" in skipped["compound_gene"] and all("\n" not in v for v in skipped.values())
    assert [r["probe"] for r in s["drug_vs_control"]] == [
        "linear",
        "mlp",
    ]  # 8 wells a fold: the MLP without early stopping
    for key in skipped:
        assert f"skipped {key}:" in out


def test_an_unaggregated_table_is_not_a_map(tmp_path, capsys):
    emb = small_map(tmp_path)
    rc, _, err = run_cli(capsys, "bench", "--map", emb, "--out", tmp_path / "b")
    assert rc == 2 and "not a map (perturbation 'POLR2A' has several rows" in err and not (tmp_path / "b").exists()
