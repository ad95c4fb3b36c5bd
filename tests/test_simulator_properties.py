"""The demo screen's measured properties (docs/simulator.md), checked end to end. Slow: `make test-slow`."""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_demo_screen_properties(tmp_path):
    from morphoscale.data.ingest import ingest, load_ingest_config
    from morphoscale.maps import DEFAULT_ALIGNER
    from morphoscale.simulate.screen import simulate

    sys.path.insert(0, str(BENCHMARKS))  # the self-checks are a benchmark script's (benchmarks/sim_properties.py)
    from sim_properties import properties

    sim = simulate(tmp_path / "demo", "demo", seed=0, progress=False)
    store = ingest(
        load_ingest_config(None, {"format": "rxrx", "source": str(sim)}), tmp_path / "demo.zarr", progress=False
    )
    t = properties(sim, store).set_index(["embedding", "align"])["recall"]
    assert t["oracle", DEFAULT_ALIGNER] >= 0.5 and t["oracle", DEFAULT_ALIGNER] > t["oracle", "none"]
    assert t["per-channel intensity means", "none"] <= 0.15
    assert t["per-channel intensity means", DEFAULT_ALIGNER] >= 2 * t["per-channel intensity means", "none"]
