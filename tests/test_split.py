"""The shared train / scored split: what training may crop, what maps are made of, and that
every encoder of a run is cut the same way."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli

from morphoscale.data.split import (
    Split,
    held_out_mask,
    held_out_perturbations,
    held_out_wells,
    scored_wells,
    training_sites,
)


def _sites(n_genes=20, n_compounds=4, wells_per=4, sites_per=2) -> pd.DataFrame:
    rows = []
    perts = (
        [(f"G{i}", "gene") for i in range(n_genes)]
        + [(f"C{i}", "compound") for i in range(n_compounds)]
        + [("ctrl", "control")] * 3
    )
    w = 0
    for name, kind in perts:
        for _ in range(wells_per):
            for s in range(sites_per):
                rows.append(
                    {
                        "plate": f"P{w % 3}",
                        "well": f"W{w:03d}",
                        "site": s,
                        "batch": f"B{w % 2}",
                        "perturbation": name,
                        "perturbation_type": kind,
                        "is_control": kind == "control",
                    }
                )
            w += 1
    return pd.DataFrame(rows)


def test_perturbation_split_holds_out_a_fraction_of_each_type_and_trains_on_the_rest():
    t = _sites()
    sp = Split(by="perturbations", fraction=0.25, seed=3)
    held = held_out_perturbations(t, sp)
    assert (
        sum(h.startswith("G") for h in held) == 5 and sum(h.startswith("C") for h in held) == 1 and "ctrl" not in held
    )
    rows = training_sites(t, sp)
    trained = set(t.perturbation.iloc[rows])
    assert not trained & held and "ctrl" in trained and trained | held == set(t.perturbation)
    # the scored part: held-out perturbations and the controls (maps align on them)
    scored = set(t.perturbation[held_out_mask(t, sp)])
    assert scored == held | {"ctrl"}
    # seeded, and a new seed draws another part
    assert (
        held_out_perturbations(t, sp) == held
        and held_out_perturbations(t, Split(by="perturbations", fraction=0.25, seed=4)) != held
    )


def test_well_split_keeps_every_perturbation_on_both_sides_and_whole_wells_together():
    t = _sites(wells_per=4)
    sp = Split(by="wells", fraction=0.5, seed=0)
    rows = training_sites(t, sp)
    train = t.iloc[rows]
    test = t[held_out_mask(t, sp)]
    assert set(train.perturbation) == set(test.perturbation) == set(t.perturbation)
    # the two sites of a well never land on different sides
    assert not set(zip(train.plate, train.well)) & set(zip(test.plate, test.well))
    assert len(test.groupby(["plate", "well"])) == len(t.groupby(["plate", "well"])) // 2
    assert held_out_wells(t, sp) == set(zip(test.plate, test.well))


def test_split_does_not_depend_on_row_order():
    t = _sites()
    shuffled = t.sample(frac=1.0, random_state=1)
    for by in ("perturbations", "wells"):
        sp = Split(by=by, fraction=0.3, seed=2)
        assert scored_wells(t, sp) == scored_wells(shuffled, sp)


def test_no_split_trains_on_everything():
    assert training_sites(_sites(), Split()) is None


RUN = """
name: s
data: {simulate: {preset: tiny, seed: 0}}
split: {by: perturbations, fraction: 0.5}
encoders:
  - {name: oracle, kind: oracle}
  - {name: wsl, train: {model: wsl_midl_cnn_64, max_steps: 2, batch_size: 8, warmup_steps: 1}}
bench: {null_size: 200}
workers: 2
"""


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    from morphoscale.flow.config import load_run_config
    from morphoscale.flow.pipeline import Flow

    root = tmp_path_factory.mktemp("split")
    (root / "r.yaml").write_text(RUN)
    Flow(load_run_config(root / "r.yaml"), root / "run").run(progress=False)
    return root


def test_a_run_trains_on_one_part_and_maps_every_encoder_on_the_other(split_run):
    import anndata as ad

    from morphoscale.data.store import ImageStore
    from morphoscale.train.data import StoreDataModule

    run = split_run / "run"
    sites = ImageStore(run / "store.zarr").sites
    held = held_out_perturbations(sites, Split(by="perturbations", fraction=0.5))
    saved = json.loads((run / "encoders" / "wsl" / "train" / "config.json").read_text())
    assert saved["train"]["split"]["by"] == "perturbations"
    rows = training_sites(sites, Split(**saved["train"]["split"]))
    assert saved["training_sites"] == len(rows) < len(sites)
    # what the training data module actually yields: never a held-out perturbation
    dm = StoreDataModule(str(run / "store.zarr"), 64, 8, 6, sites=rows)
    dm.setup()
    labels = {dm.dataset.label_names[int(dm.dataset[i]["label"])] for i in range(48)}
    assert labels and not labels & held
    for enc in ("oracle", "wsl"):
        m = ad.read_h5ad(run / "encoders" / enc / "map.h5ad")
        perts = set(m.obs.loc[~m.obs["is_control"].astype(bool), "perturbation"].astype(str))
        assert perts and perts <= held, enc
        assert m.obs["is_control"].astype(bool).any()  # controls to align on
    page = (run / "report.html").read_text()
    assert "Split by perturbations" in page


def test_map_verb_keeps_the_held_out_wells_of_a_training_run(split_run, capsys):
    import anndata as ad

    run = split_run / "run"
    out = split_run / "m.h5ad"
    rc, _, err = run_cli(
        capsys,
        "map",
        "--embeddings",
        run / "encoders" / "wsl" / "embeddings.h5ad",
        "--out",
        out,
        "--held-out-of",
        run / "encoders" / "wsl" / "train",
    )
    assert rc == 0, err
    a, b = ad.read_h5ad(out), ad.read_h5ad(run / "encoders" / "wsl" / "map.h5ad")
    assert list(a.obs_names) == list(b.obs_names)
    np.testing.assert_allclose(a.X, b.X, atol=1e-5)


def test_split_errors(split_run, tmp_path, capsys):
    (tmp_path / "not_a_training").mkdir()
    rc, _, err = run_cli(
        capsys,
        "map",
        "--embeddings",
        split_run / "run" / "encoders" / "wsl" / "embeddings.h5ad",
        "--out",
        tmp_path / "m.h5ad",
        "--held-out-of",
        tmp_path / "not_a_training",
    )
    assert_one_line_error(rc, err, "config.json", "not found")
    assert not (tmp_path / "m.h5ad").exists()
    bad = RUN.replace("fraction: 0.5}", "fraction: 1.5}")
    (tmp_path / "bad.yaml").write_text(bad)
    rc, _, err = run_cli(capsys, "run", tmp_path / "bad.yaml", "--out", tmp_path / "r")
    assert_one_line_error(rc, err, "split.fraction")
    clash = RUN.replace("warmup_steps: 1}", "warmup_steps: 1, split: {by: wells}}")
    (tmp_path / "clash.yaml").write_text(clash)
    rc, _, err = run_cli(capsys, "run", tmp_path / "clash.yaml", "--out", tmp_path / "r2", "--quiet")
    assert_one_line_error(rc, err, "encoders.wsl.train.split")


def test_training_never_sees_a_held_out_perturbation(sim_store, tmp_path, monkeypatch):
    from morphoscale.data.datasets import CropDataset
    from morphoscale.data.store import ImageStore
    from morphoscale.train.fit import TrainConfig, train

    seen: set[int] = set()
    original = CropDataset.__getitem__

    def spy(self, index):
        item = original(self, index)
        seen.add(int(item["label"]))
        return item

    monkeypatch.setattr(CropDataset, "__getitem__", spy)
    sp = Split(by="perturbations", fraction=0.5, seed=1)
    train(
        TrainConfig(model="wsl_midl_cnn_64", max_steps=8, batch_size=16, warmup_steps=1, split=sp),
        sim_store,
        tmp_path / "t",
        progress=False,
    )
    sites = ImageStore(sim_store).sites
    names = sorted(set(sites["perturbation"].astype(str)))
    seen_names = {names[i] for i in seen}
    held = held_out_perturbations(sites, sp)
    assert len(seen_names) > 5 and not seen_names & held
