"""The ladder: each learned encoder against its twin, the strongest untrained encoder, the
features (paired differences) and the oracle (the fraction of its distance from random)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from morphoscale.bench.intervals import mean_replicates
from morphoscale.bench.ladder import Rungs, ladder_table, verdicts
from morphoscale.bench.summary import BenchResult

UNITS = [f"cluster{k}" for k in range(12)]


def result(name: str, per_unit: np.ndarray) -> BenchResult:
    """A bench result whose decoding R2 is the mean of per-unit values (jackknife replicates:
    the leave-one-out means), as the suite would record it."""
    reps = mean_replicates(per_unit)
    se = np.sqrt((len(reps) - 1) / len(reps) * ((reps - reps.mean()) ** 2).sum())
    est = {
        "value": per_unit.mean(),
        "se": se,
        "ci_low": per_unit.mean() - 1.96 * se,
        "ci_high": per_unit.mean() + 1.96 * se,
    }
    summary = {
        "estimates": {"decoding_r2": {**est, "n_units": 12, "unit": "cluster of perturbations sharing a phenotype"}}
    }
    return BenchResult(None, summary, pd.DataFrame({"metric": "decoding_r2", "unit": UNITS, "value": reps}))


def test_the_ladder_pairs_each_learned_encoder_with_every_rung():
    rng = np.random.default_rng(0)
    base = rng.normal(0.3, 0.05, 12)
    res = {
        "mae": result("mae", base + 0.10 + rng.normal(0, 0.005, 12)),
        "twin": result("twin", base),
        "cnn": result("cnn", base + 0.10 + rng.normal(0, 0.005, 12)),  # as strong as the MAE
        "features": result("features", base + 0.20 + rng.normal(0, 0.005, 12)),
        "oracle": result("oracle", np.full(12, 0.9) + rng.normal(0, 0.01, 12)),
    }
    t = ladder_table(res, {"mae": "twin"}, Rungs(untrained="cnn", features="features", oracle="oracle"))
    assert list(t["rung"]) == ["twin", "strongest untrained", "features", "oracle fraction"]
    twin, cnn, feats, orc = (t.iloc[i] for i in range(4))
    assert twin.difference == pytest.approx(res["mae"].estimates["decoding_r2"]["value"] - base.mean())
    assert twin.ci_low > 0 and cnn.ci_low < 0 < cnn.ci_high and feats.ci_high < 0
    # the oracle fraction: (E - 0) / (oracle - 0), each replicate the ratio of the replicates
    e, o = (res[n].estimates["decoding_r2"]["value"] for n in ("mae", "oracle"))
    assert orc.difference == pytest.approx(e / o) and orc.ci_low < e / o < orc.ci_high
    ratio = res["mae"].replicates_of("decoding_r2") / res["oracle"].replicates_of("decoding_r2")
    assert orc.se == pytest.approx(np.sqrt(11 / 12 * ((ratio - ratio.mean()) ** 2).sum()))
    (line,) = verdicts(t)
    assert line.startswith("mae: above twin (twin) on decoding R2 of the true parameters")
    assert "not above strongest untrained (cnn) on any metric" in line
    assert "not above features (features) on any metric; below it on decoding R2" in line
    assert "of the oracle's distance from random" in line


def test_a_rung_the_run_lacks_is_left_out():
    rng = np.random.default_rng(1)
    res = {"mae": result("mae", rng.normal(0.4, 0.05, 12)), "twin": result("twin", rng.normal(0.3, 0.05, 12))}
    t = ladder_table(res, {"mae": "twin"}, Rungs(untrained="cnn", features=None, oracle="oracle"))
    assert list(t["rung"]) == ["twin"]
    assert ladder_table(res, {}, Rungs()).empty
    # the twin is the strongest untrained encoder: one rung, not the same pairing twice
    assert list(ladder_table(res, {"mae": "twin"}, Rungs(untrained="twin"))["rung"]) == ["twin"]
