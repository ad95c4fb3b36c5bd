"""Shared fixtures: small screens written on the fly, and the real example data."""

from __future__ import annotations

# isort: off
# First of all: importing morphoscale pins the numeric libraries' kernels, which they read when
# they load (numpy loaded earlier keeps the machine's own, and in-process results would differ
# in the last digits from the CLI's; pyproject.toml keeps zarr's pytest plugin from loading it).
import morphoscale  # noqa: F401

# isort: on
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_csv_screen, write_rxrx_screen


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The real example data (fetched by `make setup`; fetched here when missing)."""
    from morphoscale.data import examples

    for name in examples.EXAMPLES:
        if name != "efaar-reference":  # tests/test_reference_efaar.py fetches it, or skips
            examples.get(name)
    return examples.cache_dir()


@pytest.fixture
def rxrx_screen(tmp_path) -> Path:
    return write_rxrx_screen(tmp_path / "rxrx")


@pytest.fixture
def csv_screen(tmp_path) -> Path:
    return write_csv_screen(tmp_path / "csvscreen")


@pytest.fixture(autouse=True)
def _quiet_cwd(tmp_path, monkeypatch):
    # Tests never write into the repository.
    monkeypatch.chdir(tmp_path)
    np.random.seed(0)
    yield


@pytest.fixture(scope="session")
def sim_screen(tmp_path_factory):
    """The `tiny` simulated screen (2 batches, 192 sites of 64 px) with its ground_truth/."""
    from morphoscale.simulate.screen import simulate

    root = tmp_path_factory.mktemp("tiny")
    return simulate(root / "tiny", "tiny", seed=0, workers=2, progress=False)


@pytest.fixture(scope="session")
def sim_store(sim_screen):
    """The `tiny` simulated screen, ingested."""
    from morphoscale.data.ingest import ingest, load_ingest_config

    return ingest(
        load_ingest_config(None, {"format": "rxrx", "source": str(sim_screen), "workers": 2}),
        sim_screen.parent / "tiny.zarr",
        progress=False,
    )


@pytest.fixture(scope="session")
def trained(sim_store, tmp_path_factory):
    """A 2-step model and its embeddings and map, to feed the later verbs bad variants of."""
    from morphoscale.train.fit import TrainConfig, train

    root = tmp_path_factory.mktemp("rel")
    ckpt = train(
        TrainConfig(
            model="mae_vit_tiny_patch8_64", model_overrides={"depth": 1}, batch_size=4, max_steps=2, warmup_steps=1
        ),
        sim_store,
        root / "m",
        progress=False,
    )
    from morphoscale.cli import main

    assert (
        main(["embed", "--checkpoint", str(ckpt), "--store", str(sim_store), "--out", str(root / "e.h5ad"), "--quiet"])
        == 0
    )
    assert main(["map", "--embeddings", str(root / "e.h5ad"), "--out", str(root / "map.h5ad")]) == 0
    return root, ckpt
