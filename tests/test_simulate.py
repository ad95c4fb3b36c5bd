"""The simulated screen: determinism, the reader round trip, layout rules, and known biology."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli

from morphoscale.data.store import ImageStore
from morphoscale.simulate.biology import PARAMETERS
from morphoscale.simulate.oracle import oracle_embeddings
from morphoscale.simulate.render import Optics, Renderer


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, examples_dir):
    from morphoscale.simulate.screen import simulate

    out = tmp_path_factory.mktemp("sim") / "tiny"
    simulate(out, "tiny", seed=0, workers=2, progress=False)
    return out


def test_same_seed_is_bit_identical_whatever_the_workers(tiny, tmp_path):
    from morphoscale.simulate.screen import simulate

    again = simulate(tmp_path / "again", "tiny", seed=0, workers=1, progress=False)
    assert _digest(again) == _digest(tiny)
    other = simulate(tmp_path / "other", "tiny", seed=1, workers=2, progress=False)
    assert _digest(other) != _digest(tiny)


def test_rxrx_reader_round_trip(tiny, tmp_path, capsys):
    rc, _, err = run_cli(
        capsys,
        "ingest",
        "--format",
        "rxrx",
        "--source",
        tiny,
        "--out",
        tmp_path / "t.zarr",
        "--quiet",
        "--workers",
        "1",
    )
    assert rc == 0, err
    store = ImageStore(tmp_path / "t.zarr")
    meta = pd.read_csv(tiny / "metadata.csv")
    assert (
        len(store) == len(meta)
        and store.channels == ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
        and store.image_size == (64, 64)
    )
    sites = store.sites
    assert set(sites.perturbation_type) == {"gene", "compound", "control"}
    assert sites.loc[sites.perturbation_type == "compound", "concentration"].notna().all()
    from PIL import Image

    r = meta.iloc[7]
    png = np.asarray(Image.open(tiny / "images" / r.experiment / f"Plate{r.plate}" / f"{r.well}_s{r.site}_w3.png"))
    np.testing.assert_array_equal(store.read(7)[2], png)


def test_controls_on_every_plate_and_replicates_across_batches(tiny):
    wells = pd.read_csv(tiny / "ground_truth" / "wells.csv")
    per_plate = wells.groupby(["experiment", "plate"]).apply(
        lambda g: (g.perturbation_type == "control").mean(), include_groups=False
    )
    assert (per_plate >= 0.05).all()
    genes = wells[wells.perturbation_type == "gene"]
    assert (genes.groupby("perturbation").experiment.nunique() >= 2).all()
    compounds = wells[wells.perturbation_type == "compound"]
    assert compounds.groupby("perturbation").concentration.nunique().min() >= 2


def test_complex_members_are_more_similar_than_non_members_in_the_oracle(tiny):
    emb = oracle_embeddings(tiny)
    truth = pd.read_csv(tiny / "ground_truth" / "complexes.csv")
    pheno = pd.read_csv(tiny / "ground_truth" / "phenotypes.csv").set_index("gene")
    obs = emb.obs
    genes = sorted(set(obs.perturbation[obs.perturbation_type == "gene"]) & set(pheno.index[pheno.has_phenotype]))
    X = np.vstack([np.asarray(emb.X)[(obs.perturbation == g).to_numpy()].mean(0) for g in genes])
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    chosen = truth[truth.chosen]
    members = chosen.groupby("complex").gene.apply(set)
    same = np.zeros_like(S, bool)
    for ms in members:
        idx = [genes.index(g) for g in ms if g in genes]
        for i in idx:
            for j in idx:
                same[i, j] = i != j
    off = ~np.eye(len(genes), dtype=bool)
    assert S[same].mean() > S[off & ~same].mean() + 0.3


def test_compound_phenotype_follows_the_dose(tiny, examples_dir):
    from morphoscale.simulate.biology import BiologyConfig, make_biology

    bio = make_biology(
        examples_dir / "annotations", BiologyConfig(n_complexes=6, n_compounds=3), np.random.default_rng(0)
    )
    cid = bio.compounds.compound.iloc[0]
    mags = [np.linalg.norm(bio.compound_phenotype(cid, c)) for c in (1e-4, 1e-2, 1.0, 100.0)]
    assert mags[0] < 0.05 * mags[-1] and mags == sorted(mags)
    # independently: Hill occupancy times (targets + off-target), minus toxicity in cell count and area
    r = bio.compounds[bio.compounds.compound == cid].iloc[0]
    for c in (0.01, 1.0, 100.0):
        occ = r.emax * c**r.hill / (r.ec50**r.hill + c**r.hill)
        expected = occ * (
            sum(bio.phenotype[t] for t in bio.compounds[bio.compounds.compound == cid].target)
            + bio.compound_offtarget[cid]
        )
        tox = r.toxicity * c / (c + 10 * r.ec50)
        expected[PARAMETERS.index("cell_count")] -= tox
        expected[PARAMETERS.index("cell_area")] -= 0.5 * tox
        np.testing.assert_allclose(bio.compound_phenotype(cid, c), expected)


def test_phenotypes_change_what_the_images_show():
    r = Renderer(96)
    optics = Optics(gain=np.ones(6), offset=np.full(6, 0.02), vignetting=0.0, focus_blur=0.0)

    def mean_of(param, value, channel, n=6):
        z = np.zeros(len(PARAMETERS))
        z[PARAMETERS.index(param)] = value
        return np.mean([r.render(z, optics, np.random.default_rng(k))[channel].mean() for k in range(n)])

    assert mean_of("er_intensity", 2.5, 1) > 1.3 * mean_of("er_intensity", -2.5, 1)
    assert mean_of("nucleus_area", 2.5, 0) > 1.3 * mean_of("nucleus_area", -2.5, 0)
    assert mean_of("cell_count", 2.5, 0) > 1.3 * mean_of("cell_count", -2.5, 0)


def test_unknown_preset_and_existing_output(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "simulate", "--preset", "huge", "--out", tmp_path / "x")
    assert_one_line_error(rc, err, "unknown preset 'huge'")
    (tmp_path / "y").mkdir()
    rc, _, err = run_cli(capsys, "simulate", "--preset", "tiny", "--out", tmp_path / "y")
    assert_one_line_error(rc, err, "y: output exists; pass --overwrite")
