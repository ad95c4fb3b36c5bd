"""Aligners fitted on controls: what each is defined to do, computed independently."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from morphoscale.errors import InputError
from morphoscale.maps.align import (
    ALIGNERS,
    TVN,
    CenterScale,
    Harmony,
    PCACenterScale,
    Sphering,
    TVNPerBatch,
    make_aligner,
)


def distorted_screen(seed=0, n_ctrl=300, n_pert=20, reps=3, d=6, n_batches=3):
    """The same latent wells in every batch, distorted per batch by a per-feature gain and offset."""
    rng = np.random.default_rng(seed)
    ctrl = rng.normal(size=(n_ctrl, d))
    effects = 2.0 * rng.normal(size=(n_pert, d))
    treat = np.repeat(effects, reps, axis=0) + rng.normal(size=(n_pert * reps, d))
    Z = np.vstack([ctrl, treat])
    is_control = np.r_[np.ones(n_ctrl, bool), np.zeros(n_pert * reps, bool)]
    Xs, batches = [], []
    for b in range(n_batches):
        gain, offset = rng.uniform(0.3, 3.0, d), rng.normal(0, 5, d)
        Xs.append(Z * gain + offset)
        batches.append(np.full(len(Z), f"b{b}"))
    return np.vstack(Xs), np.concatenate(batches), np.tile(is_control, n_batches), len(Z)


def batch_discrepancy(Y, n):
    """How far the same latent well lands in different batches, relative to the spread of wells."""
    parts = [Y[k * n : (k + 1) * n] for k in range(len(Y) // n)]
    diff = np.mean([np.linalg.norm(parts[0] - p, axis=1).mean() for p in parts[1:]])
    return diff / np.linalg.norm(parts[0] - parts[0].mean(0), axis=1).mean()


def test_center_scale_gives_controls_zero_mean_unit_sd_per_batch():
    X, batch, ctrl, _ = distorted_screen()
    Y = CenterScale().fit_transform(X, batch, ctrl)
    for b in np.unique(batch):
        C = Y[(batch == b) & ctrl]
        np.testing.assert_allclose(C.mean(0), 0, atol=1e-10)
        np.testing.assert_allclose(C.std(0), 1, atol=1e-10)


def test_center_scale_removes_a_per_batch_gain_and_offset_exactly_on_controls_statistics():
    X, batch, ctrl, n = distorted_screen()
    assert batch_discrepancy(X, n) > 1.0
    assert batch_discrepancy(CenterScale().fit_transform(X, batch, ctrl), n) < 1e-10


def test_tvn_per_batch_removes_a_known_per_batch_linear_distortion():
    X, batch, ctrl, n = distorted_screen()
    before = batch_discrepancy(X, n)
    for reg in (0.0, 0.5):
        assert batch_discrepancy(TVNPerBatch(reg=reg).fit_transform(X, batch, ctrl), n) < 1e-8 * before


def test_reference_tvn_centres_only_globally_so_a_per_batch_offset_survives():
    """efaar's TVN center-scales on all controls together: a batch's offset is not removed
    (its pipeline center-scales by plate before, in embed_by_pca); the per-batch variant removes it."""
    X, batch, ctrl, n = distorted_screen()
    Y = TVN().fit_transform(X, batch, ctrl)
    means = np.array([Y[(batch == b) & ctrl].mean(0) for b in np.unique(batch)])
    assert np.abs(means).max() > 0.5
    Y = TVNPerBatch().fit_transform(X, batch, ctrl)
    np.testing.assert_allclose([Y[(batch == b) & ctrl].mean(0) for b in np.unique(batch)], 0, atol=1e-8)


def test_tvn_without_regularization_whitens_each_batch_of_controls():
    rng = np.random.default_rng(4)
    X, batch, ctrl, _ = distorted_screen(seed=4)
    # add a different correlated (non-diagonal) distortion per batch
    for b in np.unique(batch):
        rows = batch == b
        X[rows] = X[rows] @ (np.eye(X.shape[1]) + 0.4 * rng.normal(size=(X.shape[1], X.shape[1])))
    for aligner in (TVN(reg=0.0), TVNPerBatch(reg=0.0)):
        Y = aligner.fit_transform(X, batch, ctrl)
        for b in np.unique(batch):
            np.testing.assert_allclose(np.cov(Y[(batch == b) & ctrl], rowvar=False), np.eye(X.shape[1]), atol=1e-6)


def test_tvn_per_batch_steps_match_the_definition():
    from sklearn.decomposition import PCA

    X, batch, ctrl, _ = distorted_screen(seed=3)

    def cs(A):
        out = np.empty_like(A)
        for b in np.unique(batch):
            C = A[(batch == b) & ctrl]
            out[batch == b] = (A[batch == b] - C.mean(0)) / C.std(0)
        return out

    Z = cs(X)
    Q = cs(PCA(n_components=X.shape[1], svd_solver="full").fit(Z[ctrl]).transform(Z))
    expected = np.empty_like(Q)
    for b in np.unique(batch):
        rows = batch == b
        cov = np.cov(Q[rows & ctrl], rowvar=False) + 0.5 * np.eye(Q.shape[1])
        w, v = np.linalg.eigh(cov)
        expected[rows] = Q[rows] @ (v @ np.diag(w**-0.5) @ v.T)
    got = TVNPerBatch().fit_transform(X, batch, ctrl)
    # PCA may flip a component's sign; the result is then flipped in the same component
    np.testing.assert_allclose(got @ got.T, expected @ expected.T, atol=1e-8)


def test_sphering_whitens_the_controls():
    X, batch, ctrl, _ = distorted_screen()
    Y = Sphering(epsilon=1e-9).fit_transform(X, batch, ctrl)
    np.testing.assert_allclose(np.cov(Y[ctrl], rowvar=False), np.eye(X.shape[1]), atol=1e-5)


def test_pca_center_scale_controls_are_centred_per_batch():
    X, batch, ctrl, _ = distorted_screen()
    Y = PCACenterScale(n_components=4).fit_transform(X, batch, ctrl)
    assert Y.shape[1] == 4
    for b in np.unique(batch):
        np.testing.assert_allclose(Y[(batch == b) & ctrl].mean(0), 0, atol=1e-10)


def test_harmony_reduces_the_batch_discrepancy():
    X, batch, ctrl, n = distorted_screen(n_ctrl=150)
    before = batch_discrepancy(X, n)
    Y = Harmony(n_components=6).fit_transform(X, batch, ctrl)
    assert Y.shape == (len(X), 6)
    assert batch_discrepancy(Y, n) < 0.2 * before


@pytest.mark.parametrize("name", ["center_scale", "pca_center_scale", "tvn", "tvn_per_batch", "harmony"])
def test_a_batch_without_controls_is_an_error(name):
    X, batch, ctrl, _ = distorted_screen()
    ctrl = ctrl & (batch != "b1")
    with pytest.raises(InputError, match="batch 'b1' has 0 control wells"):
        make_aligner(name).fit(X, batch, ctrl)


def test_nan_rows_and_unknown_aligner_are_errors():
    X, batch, ctrl, _ = distorted_screen()
    X[5, 2] = np.nan
    with pytest.raises(InputError, match="1 rows with NaN"):
        TVN().fit(X, batch, ctrl)
    with pytest.raises(InputError, match="unknown alignment 'combat'"):
        make_aligner("combat")


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(["center_scale", "tvn", "tvn_per_batch", "sphering", "pca_center_scale"]), st.integers(0, 1000))
def test_aligners_are_invariant_to_row_order_and_batch_relabelling(name, seed):
    X, batch, ctrl, _ = distorted_screen(seed=seed % 7, n_ctrl=60, n_pert=5)
    ref = make_aligner(name).fit_transform(X, batch, ctrl)
    perm = np.random.default_rng(seed).permutation(len(X))
    relabel = np.array([{"b0": "z", "b1": "a", "b2": "m"}[b] for b in batch])
    got = make_aligner(name).fit_transform(X[perm], relabel[perm], ctrl[perm])
    # PCA-based aligners may flip component signs
    np.testing.assert_allclose(np.abs(got), np.abs(ref[perm]), atol=1e-7)


def test_every_aligner_is_registered():
    assert set(ALIGNERS) == {"none", "center_scale", "pca_center_scale", "tvn", "tvn_per_batch", "sphering", "harmony"}


def few_controls_screen(seed=0, d=192, n_batches=3, controls_per_batch=10, treated=300):
    """30 control wells of 192-dim embeddings (the normal case: fewer controls than dimensions)."""
    rng = np.random.default_rng(seed)
    X, batch, ctrl = [], [], []
    for b in range(n_batches):
        c = rng.normal(size=(controls_per_batch, d))
        t = rng.normal(size=(treated // n_batches, d)) * 1.2
        X.append(np.vstack([c, t]) + rng.normal(0, 2, d))
        batch += [f"b{b}"] * (controls_per_batch + len(t))
        ctrl += [True] * controls_per_batch + [False] * len(t)
    return np.vstack(X), np.array(batch), np.array(ctrl)


def scale_ratio(Y, ctrl):
    return float(np.sqrt((Y[~ctrl] ** 2).sum(1).mean() / (Y[ctrl] ** 2).sum(1).mean()))


@pytest.mark.filterwarnings("ignore::morphoscale.errors.AlignmentWarning")  # said and tested below
@pytest.mark.parametrize("name", ["none", "center_scale", "pca_center_scale", "tvn_per_batch", "sphering", "harmony"])
def test_with_fewer_controls_than_dimensions_treated_wells_keep_the_controls_scale(name):
    X, batch, ctrl = few_controls_screen()
    Y = make_aligner(name).fit_transform(X, batch, ctrl)
    assert np.isfinite(Y).all()
    assert 0.2 < scale_ratio(Y, ctrl) < 5


def test_rank_safe_aligners_keep_only_what_the_controls_support_and_say_so():
    from morphoscale.errors import AlignmentWarning

    X, batch, ctrl = few_controls_screen()
    with pytest.warns(
        AlignmentWarning, match="pca_center_scale: kept 29 of 192 dimensions, the components 30 control wells support"
    ):
        a = PCACenterScale().fit(X, batch, ctrl)
    assert (
        a.n_components_out_ == 29 and a.summary_["dropped_components"] == 163
    )  # 30 centred controls span 29 directions
    with pytest.warns(AlignmentWarning, match=r"kept 9 of 192 dimensions.*10 in the smallest batch"):
        t = TVNPerBatch().fit(X, batch, ctrl)
    assert t.n_components_out_ == 9 and t.summary_["warnings"]
    with pytest.warns(AlignmentWarning, match="sphering: kept 29 of 192"):
        s = Sphering().fit(X, batch, ctrl)
    assert s.summary_["n_components"] == 29 and np.linalg.matrix_rank(s.W_) == 29


def test_reference_tvn_keeps_its_definition_with_few_controls_and_warns():
    """efaar's TVN scales the unsupported 30th component by numerical noise: the blow-up the
    rank-safe variants avoid. It keeps the definition and says so, naming the counts."""
    from morphoscale.errors import AlignmentWarning

    X, batch, ctrl = few_controls_screen()
    with pytest.warns(AlignmentWarning) as record:
        Y = TVN().fit_transform(X, batch, ctrl)
    messages = [str(w.message) for w in record]
    assert any("30 control wells of 192 dimensions support 29 of the 30 components" in m for m in messages)
    assert any(
        "3 of 3 batches have fewer control wells than the 30 components (first: 'b0' (10))" in m for m in messages
    )
    assert scale_ratio(Y, ctrl) > 1e3


def test_aligners_follow_the_scikit_learn_estimator_contract():
    from sklearn.base import BaseEstimator, TransformerMixin, clone
    from sklearn.exceptions import NotFittedError

    X, batch, ctrl, _ = distorted_screen()
    for name, cls in ALIGNERS.items():
        assert issubclass(cls, BaseEstimator) and issubclass(cls, TransformerMixin)
        a = clone(cls())
        assert a.get_params() == cls().get_params()
        if name != "harmony":
            with pytest.raises(NotFittedError):
                a.transform(X, batch)
            a.fit(X, batch, ctrl)
            assert a.n_features_in_ == X.shape[1]
            with pytest.raises(InputError, match="3 dimensions; the aligner was fitted on 6"):
                a.transform(X[:, :3], batch)
    with pytest.raises(InputError, match="reg must be >= 0"):
        TVN(reg=-1).fit(X, batch, ctrl)  # validated in fit, not in __init__
    with pytest.raises(InputError, match="call fit_transform"):
        Harmony().fit(X, batch, ctrl).transform(X, batch)


def test_map_columns_are_named_by_what_they_are():
    """A map keeps the embedding's feature names where the alignment keeps the features, and
    names the aligner's components otherwise (never 0, 1, ...)."""
    import anndata as ad
    import pandas as pd

    from morphoscale.maps.build import build_map

    rng = np.random.default_rng(0)
    n = 60
    obs = pd.DataFrame(
        {
            "perturbation": [f"g{i % 5}" if i % 3 else "ctrl" for i in range(n)],
            "perturbation_type": ["gene" if i % 3 else "control" for i in range(n)],
            "is_control": [i % 3 == 0 for i in range(n)],
            "batch": ["b1"] * 30 + ["b2"] * 30,
        },
        index=[str(i) for i in range(n)],
    )
    emb = ad.AnnData(X=rng.standard_normal((n, 8)).astype(np.float32), obs=obs)
    emb.var_names = [f"Cells_F{k}" for k in range(8)]
    for align, first in (("center_scale", "Cells_F0"), ("none", "Cells_F0"), ("tvn_per_batch", "tvn_per_batch_0")):
        m, wells = build_map(emb, align)
        assert m.var_names[0] == first and list(m.var_names) == list(wells.var_names) and m.var_names.is_unique
