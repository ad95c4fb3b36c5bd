"""Our blocked mAP against copairs 0.5 (the field's reference) on the same inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from copairs.compute import get_null_dists
from copairs.compute import random_ap as copairs_random_ap
from copairs.map import average_precision as copairs_ap
from copairs.map import mean_average_precision as copairs_map
from copairs.map.normalization import expected_ap
from scipy.stats import chisquare, ks_2samp
from test_map_metrics import wells

from morphoscale.bench import average_precision as apm


def _activity_reference(X, obs):
    meta = pd.DataFrame(
        {"perturbation": obs["perturbation"].astype(str).to_numpy(), "is_control": obs["is_control"].to_numpy(bool)}
    )
    meta["reference"] = np.where(meta["is_control"], np.arange(len(meta)), -1)
    ref = copairs_ap(meta, X, ["perturbation", "reference"], [], [], ["perturbation", "reference"], progress_bar=False)
    return ref[~ref["is_control"]].reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_activity_ap_and_map_equal_copairs_with_ties(seed, tmp_path, monkeypatch):
    X, obs = wells(seed=seed, n_genes=10, reps=6, n_ctrl=30, d=6)
    ctrl = np.flatnonzero(obs["is_control"])
    treated = np.flatnonzero(~obs["is_control"])
    X[ctrl[0]] = X[treated[0]]  # a control identical to a replicate: a positive/negative tie
    X[treated[5]] = X[treated[1]]  # two identical treatment wells
    ref = _activity_reference(X, obs)
    monkeypatch.setattr(apm, "BLOCK_ELEMENTS", 50)  # many small blocks: the blocking changes nothing
    ours = apm.activity_ap(X, obs).sort_values("row").reset_index(drop=True)
    np.testing.assert_allclose(ours["average_precision"], ref["average_precision"], rtol=0, atol=1e-12)
    assert (ours["n_total_pairs"].to_numpy() == ref["n_total_pairs"].to_numpy()).all()
    assert (ours["n_pos_pairs"].to_numpy() == ref["n_pos_pairs"].to_numpy()).all()
    # given copairs' own null distributions, our mAP, normalized mAP and p-values are copairs'
    expected = copairs_map(
        ref, ["perturbation"], null_size=500, threshold=0.05, seed=seed, progress_bar=False, cache_dir=tmp_path / "a"
    )
    confs, index = np.unique(ref[["n_pos_pairs", "n_total_pairs"]].to_numpy(), axis=0, return_inverse=True)
    nulls = get_null_dists(confs, 500, seed, cache_dir=tmp_path / "b", progress_bar=False)
    got = apm.map_p_values(ours, "perturbation", confs, nulls, index.ravel()).merge(
        expected, on="perturbation", suffixes=("", "_ref")
    )
    assert len(got) == len(expected) == 10
    for col in ("mean_average_precision", "mean_normalized_average_precision", "p_value"):
        np.testing.assert_allclose(got[col], got[f"{col}_ref"], rtol=0, atol=1e-12)
    # with our own nulls: the same mAP, p-values within the sampling error of two 2,000-draw nulls
    own = apm.mean_average_precision(ours, "perturbation", 2000, seed=seed).merge(
        copairs_map(
            ref,
            ["perturbation"],
            null_size=2000,
            threshold=0.05,
            seed=seed,
            progress_bar=False,
            cache_dir=tmp_path / "c",
        ),
        on="perturbation",
    )
    assert np.abs(own["p_value_x"] - own["p_value_y"]).max() < 0.06
    assert (own["below_corrected_p_x"] == own["below_corrected_p_y"]).mean() >= 0.9


def test_consistency_ap_equals_copairs_with_genes_in_several_groups(monkeypatch):
    rng = np.random.default_rng(4)
    genes = [f"G{i}" for i in range(50)]
    X = rng.normal(size=(50, 5))
    X[:12] += 2.0
    groups = {f"C{j}": list(rng.choice(genes, rng.integers(2, 10), replace=False)) for j in range(10)}
    groups["C0"] = groups["C0"] + ["NOT_IN_MAP"]
    monkeypatch.setattr(apm, "BLOCK_ELEMENTS", 200)
    ours = apm.consistency_ap(X, genes, groups)
    assert ours["gene"].duplicated().any()  # the same gene in several groups
    index = {g: i for i, g in enumerate(genes)}
    ref = copairs_ap(
        ours[["group", "gene"]],
        X[ours["gene"].map(index).to_numpy()],
        ["group"],
        ["gene"],
        [],
        ["group", "gene"],
        progress_bar=False,
    )
    np.testing.assert_allclose(ours["average_precision"], ref["average_precision"], rtol=0, atol=1e-12)
    assert (ours["n_total_pairs"].to_numpy() == ref["n_total_pairs"].to_numpy()).all()
    assert (ours["n_pos_pairs"].to_numpy() == ref["n_pos_pairs"].to_numpy()).all()


def test_null_subsets_are_uniform_and_ap_nulls_match_copairs():
    # every 2-subset of 5 ranks equally likely: AP of positives at ranks {a, b} identifies the subset
    ap = apm.random_ap(20000, 2, 5, seed=0)
    values, counts = np.unique(np.round(ap.astype(np.float64), 6), return_counts=True)
    subsets = {round((1 / (a + 1) + 2 / (b + 1)) / 2, 6): 0 for a in range(5) for b in range(a + 1, 5)}
    expected = (
        np.array(
            [
                sum(1 for a in range(5) for b in range(a + 1, 5) if round((1 / (a + 1) + 2 / (b + 1)) / 2, 6) == v)
                for v in values
            ]
        )
        / 10
    )
    assert set(values) <= set(subsets) and chisquare(counts, expected * 20000).pvalue > 1e-3
    for k, n in ((3, 40), (12, 200)):
        ours, ref = apm.random_ap(5000, k, n, seed=1), copairs_random_ap(5000, k, n, seed=1)
        assert ks_2samp(ours, ref).pvalue > 1e-3
        assert ours.mean() == pytest.approx(expected_ap(k, n - k), abs=4 * ours.std() / np.sqrt(5000))
    # a configuration's null depends on (seed, k, n) alone, not on the other configurations
    a = apm.null_distributions(np.array([[3, 40], [5, 60]]), 100, seed=2)
    b = apm.null_distributions(np.array([[5, 60]]), 100, seed=2)
    np.testing.assert_array_equal(a[1], b[0])


def test_map_with_no_replicates_is_one_clear_reason():
    from morphoscale.errors import InputError

    X, obs = wells(n_genes=3, reps=0, n_plates=1)  # one well per gene
    with pytest.raises(InputError, match="no perturbation has a positive pair"):
        apm.mean_average_precision(apm.activity_ap(X, obs), "perturbation", 100)
