"""Known-relationship recall: exact against a brute-force computation over the full null."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from morphoscale.bench.clusters import pair_groups
from morphoscale.bench.relationships import (
    gene_groups,
    normalize_rows,
    null_order_statistics,
    pair_indices,
    recall_with_replicates,
    relationship_recall,
)
from morphoscale.errors import InputError


def efaar_rule(null, q, lo, hi):
    """efaar-benchmarking 1.0's compute_recall, re-stated: ranks of q in the sorted null."""
    s = np.sort(null)
    left = np.searchsorted(s, q, side="left") / len(s)
    right = np.searchsorted(s, q, side="right") / len(s)
    return (right <= lo / 100) | (left >= hi / 100)


def brute_force_recall(X, genes, pairs, lo, hi):
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    null = S[np.triu_indices(len(X), 1)]
    seen, cos = set(), []
    index = {g: i for i, g in enumerate(genes)}
    for a, b in zip(pairs.entity1, pairs.entity2):
        if a not in index or b not in index or a == b:
            continue
        key = tuple(sorted((index[a], index[b])))
        if key in seen:
            continue
        seen.add(key)
        cos.append(S[key])
    return (
        float(np.mean(efaar_rule(null, np.array(cos), lo, hi))),
        len(cos),
        float(np.mean(efaar_rule(null, null, lo, hi))),
    )


def random_case(seed, n=70, d=6, n_pairs=150):
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n)]
    X = rng.normal(size=(n, d))
    names = genes + ["NOTINMAP1", "NOTINMAP2"]
    pairs = pd.DataFrame({"entity1": rng.choice(names, n_pairs), "entity2": rng.choice(names, n_pairs)})
    return X, genes, pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("block", [7, 32, 2048])
def test_recall_equals_brute_force_exactly(seed, block):
    X, genes, pairs = random_case(seed)
    table = relationship_recall(X, genes, {"S": pairs}, block=block, dtype=torch.float64)
    for lo, hi in ((5.0, 95.0), (10.0, 90.0)):
        row = table[(table.lower == lo)].iloc[0]
        expected, n, random = brute_force_recall(X, genes, pairs, lo, hi)
        assert row.recall == expected and row.n_pairs == n
        assert row.random_recall == pytest.approx(random)  # what the rule recalls of the null itself


@pytest.mark.parametrize("n", [2, 3, 7, 20, 21, 41])
def test_the_rank_rule_holds_at_small_null_sizes_and_with_ties(n):
    """Small maps are where interpolated percentiles and efaar's ranks differ; ties (repeated
    profiles) are where searchsorted left and right differ."""
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 3))
    X[n // 2] = X[0]  # a tie in the null
    genes = [f"G{i}" for i in range(n)]
    pairs = pd.DataFrame(
        [(genes[i], genes[j]) for i in range(n) for j in range(i + 1, n)], columns=["entity1", "entity2"]
    )
    table = relationship_recall(X, genes, {"all": pairs}, dtype=torch.float64)
    for lo, hi in ((5.0, 95.0), (10.0, 90.0), (0.0, 100.0), (50.0, 50.0)):
        got = relationship_recall(X, genes, {"all": pairs}, thresholds=((lo, hi),), dtype=torch.float64).iloc[0]
        expected, _, _ = brute_force_recall(X, genes, pairs, lo, hi)
        assert got.recall == expected
    assert table.n_pairs.iloc[0] == n * (n - 1) // 2


def test_the_interval_is_the_delete_a_group_jackknife_with_the_null_held():
    X, genes, pairs = random_case(3, n=40)
    table, reps = recall_with_replicates(X, genes, {"S": pairs}, dtype=torch.float64)
    row = table[table.lower == 5.0].iloc[0]
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    null = S[np.triu_indices(len(X), 1)]
    idx = pair_indices(pairs, genes)
    hit = efaar_rule(null, S[idx[:, 0], idx[:, 1]], 5.0, 95.0)
    group, k, cut = gene_groups(idx, genes)  # pair_groups on the genes in name order
    # leaving a group out removes every pair that touches it, the null's cuts held
    loo = np.array([hit[(group[idx[:, 0]] != g) & (group[idx[:, 1]] != g)].mean() for g in range(k)])
    se = np.sqrt((len(loo) - 1) / len(loo) * ((loo - loo.mean()) ** 2).sum())
    mine = reps[reps.metric == "recall/S/5"].set_index("unit")["value"]
    np.testing.assert_allclose(mine.loc[[f"group{g}" for g in range(k)]].to_numpy(), loo, rtol=0, atol=1e-12)
    assert row.se == pytest.approx(se)
    assert row.ci_low == pytest.approx(max(0, row.recall - 1.959964 * se), abs=1e-6)
    assert row.ci_high == pytest.approx(min(1, row.recall + 1.959964 * se), abs=1e-6)
    assert row.n_genes == len(np.unique(idx)) and row.n_units == k and row.pairs_cut == pytest.approx(cut)


def test_groups_keep_a_sources_pairs_together():
    rng = np.random.default_rng(0)
    # 60 complexes of 3 to 6 genes: components as they are, no pair cut
    sizes = rng.integers(3, 7, 60)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pairs = np.array([(s + i, s + j) for s, z in zip(starts, sizes) for i in range(z) for j in range(i + 1, z)])
    group, k, cut = pair_groups(pairs, int(sizes.sum()) + 5)
    assert k == 60 and cut == 0.0 and (group[-5:] == -1).all()
    # more than 300 complexes: packed whole into 100 groups
    pairs = np.array([(2 * c, 2 * c + 1) for c in range(400)])
    group, k, cut = pair_groups(pairs, 800)
    assert k == 100 and cut == 0.0 and np.bincount(group).max() - np.bincount(group).min() <= 2
    # one long chain (a giant component): at least 50 stretches of it, only their joints cut
    pairs = np.array([(i, i + 1) for i in range(999)])
    group, k, cut = pair_groups(rng.permutation(pairs), 1000)
    assert 50 <= k <= 100 and cut == pytest.approx((k - 1) / 999)
    # two dense modules joined by one link: the communities keep them apart, cutting that link only
    a = [(i, j) for i in range(30) for j in range(i + 1, 30)]
    pairs = np.array(a + [(i + 30, j + 30) for i, j in a] + [(0, 30)] + [(100 + 2 * c, 101 + 2 * c) for c in range(60)])
    group, k, cut = pair_groups(pairs, 300)
    assert group[0] != group[30] and len(set(group[:30])) == 1 and cut == pytest.approx(1 / len(pairs))
    # fewer genes than 50: one group per gene
    group, k, cut = pair_groups(np.array([(0, 1), (1, 2)]), 3)
    assert k == 3 and cut == 1.0


@settings(max_examples=25, deadline=None)
@given(
    st.integers(3, 40),
    st.integers(1, 5),
    st.lists(st.floats(0, 1), min_size=1, max_size=4),
    st.integers(2, 9),
    st.integers(0, 10_000),
)
def test_null_order_statistics_are_exact(n, d, qs, block, seed):
    X = np.random.default_rng(seed).normal(size=(n, d))
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    null = np.sort((U @ U.T)[np.triu_indices(n, 1)])
    ranks = sorted({int(q * (len(null) - 1)) for q in qs})
    got, m, _ = null_order_statistics(normalize_rows(X, torch.float64), ranks, block=block)
    assert m == len(null)
    np.testing.assert_allclose([got[r] for r in ranks], null[ranks], rtol=0, atol=1e-12)


def test_recall_is_invariant_to_the_order_of_perturbations_and_pairs():
    X, genes, pairs = random_case(5)
    ref = relationship_recall(X, genes, {"S": pairs}, dtype=torch.float64)
    perm = np.random.default_rng(1).permutation(len(genes))
    flipped = pairs.rename(columns={"entity1": "entity2", "entity2": "entity1"}).sample(frac=1, random_state=3)
    got = relationship_recall(X[perm], [genes[i] for i in perm], {"S": flipped}, dtype=torch.float64)
    pd.testing.assert_frame_equal(
        ref.drop(columns=["lower_threshold", "upper_threshold"]),
        got.drop(columns=["lower_threshold", "upper_threshold"]),
    )


def test_pairs_are_undirected_deduplicated_without_self_pairs():
    pairs = pd.DataFrame({"entity1": ["A", "B", "A", "A", "C", "Z"], "entity2": ["B", "A", "A", "C", "A", "A"]})
    idx = pair_indices(pairs, ["A", "B", "C"])
    assert idx.tolist() == [[0, 1], [0, 2]]


def test_structured_map_beats_random_and_a_shuffled_map_does_not():
    rng = np.random.default_rng(0)
    groups = rng.normal(size=(30, 16))
    genes = [f"G{i}" for i in range(300)]
    member = np.repeat(np.arange(30), 10)
    X = groups[member] + 0.5 * rng.normal(size=(300, 16))
    pairs = pd.DataFrame(
        [(genes[i], genes[j]) for i in range(300) for j in range(i + 1, 300) if member[i] == member[j]],
        columns=["entity1", "entity2"],
    )
    rec = relationship_recall(X, genes, {"complexes": pairs})
    assert rec.loc[rec.lower == 5, "recall"].item() > 0.6
    shuffled = relationship_recall(X[rng.permutation(300)], genes, {"complexes": pairs})
    assert abs(shuffled.loc[shuffled.lower == 5, "recall"].item() - 0.10) < 0.05


def test_duplicate_gene_and_zero_profile_are_errors():
    with pytest.raises(InputError, match="gene 'A' has several profiles"):
        relationship_recall(np.eye(3), ["A", "B", "A"], {})
    with pytest.raises(InputError, match="all zeros"):
        relationship_recall(np.array([[1.0, 0], [0, 0], [0, 1]]), ["A", "B", "C"], {})
