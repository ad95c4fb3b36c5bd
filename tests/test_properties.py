"""Property tests (hypothesis) of the pieces every number depends on. Aligner invariances are
in test_align.py, exact mask counts in test_mae.py, exact null percentiles in test_recall.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

FAST = settings(max_examples=25, deadline=None)


@FAST
@given(
    c=st.integers(1, 6),
    gh=st.integers(1, 5),
    gw=st.integers(1, 5),
    p=st.sampled_from([2, 4, 8]),
    seed=st.integers(0, 10**6),
)
def test_patchify_then_unpatchify_is_the_identity(c, gh, gw, p, seed):
    from morphoscale.models.ca_mae import CAMAEViT
    from morphoscale.models.mae_vit import MAEConfig, MAEViT

    imgs = torch.randn(2, c, gh * p, gw * p, generator=torch.Generator().manual_seed(seed))
    cfg = MAEConfig(
        img_size=max(gh, gw) * p,
        patch_size=p,
        in_chans=c,
        embed_dim=16,
        depth=1,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    mae = MAEViT(cfg)
    tokens = mae.patchify(imgs)
    assert tokens.shape == (2, gh * gw, p * p * c)
    torch.testing.assert_close(mae.unpatchify(tokens, (gh, gw)), imgs, rtol=0, atol=0)
    # token k holds the pixels of patch (k // gw, k % gw)
    k = (gh * gw) // 2
    y, x = divmod(k, gw)
    torch.testing.assert_close(
        tokens[0, k].reshape(p, p, c).permute(2, 0, 1),
        imgs[0, :, y * p : (y + 1) * p, x * p : (x + 1) * p],
        rtol=0,
        atol=0,
    )
    ca = CAMAEViT(cfg, [f"c{i}" for i in range(c)])
    t = ca.patchify(imgs)
    assert t.shape == (2, c * gh * gw, p * p)
    torch.testing.assert_close(ca.unpatchify(t, (gh, gw), c), imgs, rtol=0, atol=0)


@FAST
@given(n=st.integers(4, 30), d=st.integers(2, 12), n_pairs=st.integers(1, 40), seed=st.integers(0, 10**6))
@example(n=19, d=10, n_pairs=38, seed=3917)  # a pair's cosine is the order statistic the 10% cut lands on
def test_recall_ignores_the_order_of_genes_and_of_pairs(n, d, n_pairs, seed):
    from morphoscale.bench.relationships import relationship_recall

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    genes = [f"G{i}" for i in range(n)]
    a, b = rng.integers(0, n, n_pairs), rng.integers(0, n, n_pairs)
    pairs = pd.DataFrame({"entity1": [genes[i] for i in a], "entity2": [genes[j] for j in b]})
    ref = relationship_recall(X, genes, {"S": pairs}, dtype=torch.float64)
    perm = rng.permutation(n)
    flipped = pairs.sample(frac=1.0, random_state=seed).rename(
        columns={"entity1": "entity2", "entity2": "entity1"}
    )  # shuffled, reversed
    got = relationship_recall(
        X[perm], [genes[i] for i in perm], {"S": pd.concat([flipped, pairs.iloc[:3]])}, dtype=torch.float64
    )  # duplicates too
    pd.testing.assert_series_equal(got["recall"], ref["recall"])
    pd.testing.assert_series_equal(got["n_pairs"], ref["n_pairs"])


@FAST
@given(
    n_pert=st.integers(2, 6),
    reps=st.integers(1, 4),
    d=st.integers(1, 5),
    method=st.sampled_from(["mean", "median"]),
    seed=st.integers(0, 10**6),
)
def test_aggregation_ignores_row_order_and_matches_a_groupby(n_pert, reps, d, method, seed):
    from morphoscale.maps.aggregate import aggregate

    rng = np.random.default_rng(seed)
    names = [f"P{i}" for i in range(n_pert)] + ["ctrl"]
    obs = pd.DataFrame(
        {
            "perturbation": np.repeat(names, reps),
            "perturbation_type": ["gene"] * (n_pert * reps) + ["control"] * reps,
            "is_control": [False] * (n_pert * reps) + [True] * reps,
        }
    )
    X = rng.normal(size=(len(obs), d))
    P, o = aggregate(X, obs, method)
    expected = pd.DataFrame(X).groupby(obs["perturbation"].to_numpy()).agg(method)
    np.testing.assert_allclose(
        P, expected.loc[o["perturbation"]].to_numpy(), rtol=1e-5, atol=1e-6
    )  # profiles are float32
    assert (o["n_rows"] == reps).all() and o["is_control"].sum() == 1
    perm = rng.permutation(len(obs))
    P2, o2 = aggregate(X[perm], obs.iloc[perm].reset_index(drop=True), method)
    np.testing.assert_allclose(P2, P, rtol=1e-12, atol=1e-12)
    pd.testing.assert_frame_equal(o2.reset_index(drop=True), o.reset_index(drop=True))


@FAST
@given(
    total_steps=st.integers(1, 6), world=st.sampled_from([1, 2, 4]), per=st.integers(1, 3), start_step=st.integers(0, 6)
)
def test_the_sharded_sampler_partitions_every_global_batch(total_steps, world, per, start_step):
    from morphoscale.train.data import ResumableSampler

    B = world * per
    total = total_steps * B
    shards = []
    for r in range(world):
        s = ResumableSampler(total, B, r, world)
        s.set_start(min(start_step, total_steps) * B)
        shards.append(list(s))
        assert len(s) == len(shards[-1])
    got = sorted(sum(shards, []))
    assert got == list(range(min(start_step, total_steps) * B, total))
