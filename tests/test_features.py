"""The hand-crafted baseline: segmentation, per-cell measurements checked against scikit-image
and against CellProfiler's own numbers on the real JUMP field, and the `features` verb."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli

from morphoscale.features.extract import FeatureConfig, cellprofiler_names, measure_site, site_feature_names
from morphoscale.features.flatfield import radial_flatfield
from morphoscale.features.measure import haralick, intensity_features, object_glcms, radial_features
from morphoscale.features.segment import estimate_diameter, segment_nuclei


def _disks(centers, radius, shape=(96, 96), value=200.0, rng=None):
    yy, xx = np.indices(shape)
    img = np.full(shape, 10.0)
    for cy, cx in centers:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = value
    if rng is not None:
        img += rng.normal(0, 3, shape)
    return img


def test_glcm_and_haralick_match_scikit_image_per_object():
    from skimage.feature import graycomatrix, graycoprops

    rng = np.random.default_rng(0)
    levels = 8
    q = rng.integers(0, levels, (40, 60))
    q[:, 30:] //= 3  # a second object with different texture
    labels = np.zeros((40, 60), np.int64)
    labels[2:38, 1:29] = 1
    labels[5:30, 33:58] = 2
    ours = object_glcms(labels, q, 2, levels)
    stats = haralick(ours)
    for k, (ys, xs) in enumerate(((slice(2, 38), slice(1, 29)), (slice(5, 30), slice(33, 58)))):
        g = graycomatrix(
            q[ys, xs].astype(np.uint8), distances=[1], angles=[0, np.pi / 2], levels=levels, symmetric=True
        )
        summed = g.sum(axis=3, keepdims=True)
        np.testing.assert_array_equal(ours[k], summed[:, :, 0, 0])
        for prop in ("contrast", "homogeneity", "energy", "correlation"):
            np.testing.assert_allclose(stats[prop][k], graycoprops(summed, prop)[0, 0], rtol=1e-10, err_msg=prop)
        P = summed[:, :, 0, 0] / summed.sum()
        np.testing.assert_allclose(stats["entropy"][k], -(P[P > 0] * np.log2(P[P > 0])).sum(), rtol=1e-10)
    assert stats["contrast"][0] > stats["contrast"][1]  # the flattened object is smoother


def test_intensity_statistics_match_regionprops():
    from skimage.measure import regionprops

    rng = np.random.default_rng(1)
    labels = np.zeros((50, 50), np.int64)
    labels[5:20, 5:25] = 1
    labels[25:45, 10:40] = 2
    labels[30:35, 42:48] = 3
    img = rng.uniform(0, 1000, (50, 50))
    got = intensity_features(labels, img, 3, "x")
    for r in regionprops(labels, intensity_image=img):
        k = r.label - 1
        np.testing.assert_allclose(got["x_mean"][k], r.intensity_mean)
        np.testing.assert_allclose(got["x_max"][k], r.intensity_max)
        np.testing.assert_allclose(got["x_integrated"][k], r.intensity_mean * r.area)
        np.testing.assert_allclose(got["x_std"][k], img[labels == r.label].std())


def test_radial_distribution_puts_a_centred_spot_in_the_inner_ring():
    cells = np.zeros((41, 41), np.int64)
    yy, xx = np.indices(cells.shape)
    cells[(yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2] = 1
    spot = np.where((yy - 20) ** 2 + (xx - 20) ** 2 <= 3**2, 100.0, 1.0)
    ring = np.where(np.abs(np.hypot(yy - 20, xx - 20) - 13) < 1.5, 100.0, 1.0)
    centers = np.array([[20.0, 20.0]])
    f_spot = radial_features(cells, centers, spot, 1, "s")
    f_ring = radial_features(cells, centers, ring, 1, "r")
    assert sum(v[0] for v in f_spot.values()) == pytest.approx(1.0)
    assert f_spot["s_radial_0"][0] > 0.5 and f_ring["r_radial_3"][0] > 0.5
    assert f_ring["r_radial_0"][0] < 0.1


def test_segmentation_finds_each_nucleus_and_splits_touching_ones():
    rng = np.random.default_rng(2)
    centers = [(20, 20), (20, 70), (70, 25), (66, 62), (66, 80)]  # the last two touch
    img = _disks(centers, 8, rng=rng)
    assert estimate_diameter(img) == pytest.approx(16, rel=0.35)  # the touching pair is one blob here
    nuclei = segment_nuclei(img, diameter=16)
    assert nuclei.max() == len(centers)
    for cy, cx in centers:
        assert nuclei[cy, cx] > 0
    assert nuclei[66, 62] != nuclei[66, 80]
    areas = np.bincount(nuclei.ravel())[1:]
    np.testing.assert_allclose(areas, np.pi * 8**2, rtol=0.25)


def test_radial_flatfield_undoes_vignetting_and_leaves_a_flat_field_alone():
    rng = np.random.default_rng(3)
    shape = (200, 200)
    centers = rng.uniform(10, 190, (60, 2))
    r2 = ((centers[:, 0] - 99.5) ** 2 + (centers[:, 1] - 99.5) ** 2) / (2 * 100**2)
    true = np.exp(-0.7 * r2)  # edges at half brightness
    means = np.stack([100 * true * rng.lognormal(0, 0.05, 60), 50 * rng.lognormal(0, 0.05, 60)], axis=1)
    field = radial_flatfield(centers, means, shape)
    corrected = means / field[:, centers[:, 0].astype(int), centers[:, 1].astype(int)].T
    assert np.std(np.log(corrected[:, 0])) < 0.5 * np.std(np.log(means[:, 0]))
    assert field[0, 100, 100] == pytest.approx(1.0, abs=1e-3) and field[0, 0, 0] == pytest.approx(
        np.exp(-0.7), rel=0.15
    )
    assert np.all(field[1] > 0.9)  # the second channel had no falloff
    np.testing.assert_array_equal(radial_flatfield(centers[:5], means[:5], shape), 1.0)  # too few nuclei: no fit


def test_nucleus_features_agree_with_cellprofiler_on_the_real_jump_field(examples_dir):
    """Matched by nucleus centre, areas and DNA intensities rank like CellProfiler's (Spearman >= 0.8).
    CellProfiler measured illumination-corrected images; the radial flat field stands in for that."""
    import tifffile
    from scipy.spatial import cKDTree
    from scipy.stats import spearmanr

    field = examples_dir / "jump-pilot-field"
    ld = pd.read_csv(field / "load_data.csv")
    channels = [c.removeprefix("FileName_Orig") for c in ld.columns if c.startswith("FileName_Orig")]
    image = np.stack([tifffile.imread(field / ld[f"FileName_Orig{c}"][0]) for c in channels])
    ref = pd.read_csv(field / "Nuclei.csv")
    cells = measure_site(image, channels, FeatureConfig(flatfield="radial"))
    dist, idx = cKDTree(cells[["nucleus_center_x", "nucleus_center_y"]].to_numpy()).query(
        ref[["Location_Center_X", "Location_Center_Y"]].to_numpy()
    )
    ok = dist < 5
    assert ok.sum() >= 0.9 * len(ref)
    ours, theirs = cells.iloc[idx[ok]], ref[ok]
    for a, b in (
        ("nucleus_area", "AreaShape_Area"),
        ("nucleus_DNA_integrated", "Intensity_IntegratedIntensity_DNA"),
        ("nucleus_DNA_mean", "Intensity_MeanIntensity_DNA"),
    ):
        rho = spearmanr(ours[a], theirs[b])[0]
        assert rho >= 0.8, (a, rho)


def test_measure_site_has_fixed_columns_and_handles_an_empty_site():
    channels = ["DNA", "RNA"]
    rng = np.random.default_rng(4)
    dna = _disks([(20, 20), (60, 60)], 7, rng=rng)
    image = np.stack([dna, dna * 0.5 + 30])
    cells = measure_site(image, channels, FeatureConfig())
    assert len(cells) == 2
    assert set(site_feature_names(channels)[1:]) <= set(cells.columns)
    empty = measure_site(np.zeros_like(image), channels, FeatureConfig())
    assert len(empty) == 0 and list(empty.columns) == site_feature_names(channels)[1:]


def test_features_verb_writes_embedding_layout_that_maps_and_benches(sim_store, tmp_path, capsys):
    import anndata as ad

    rc, _, err = run_cli(
        capsys,
        "features",
        "--store",
        sim_store,
        "--out",
        tmp_path / "f.h5ad",
        "--workers",
        "2",
        "--chunk-sites",
        "50",
        "--quiet",
    )
    assert rc == 0, err
    f = ad.read_h5ad(tmp_path / "f.h5ad")
    assert list(f.var_names) == cellprofiler_names(["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"], 8)
    assert np.isfinite(f.X).all() and (f.X[:, 0] > 0).all()  # every well has cells
    assert {"perturbation", "is_control", "batch", "n_sites"} <= set(f.obs.columns)
    assert f.uns["provenance"]["kind"] == "hand-crafted features"

    # one worker, site level, then averaged by hand: the same wells
    rc, _, err = run_cli(
        capsys,
        "features",
        "--store",
        sim_store,
        "--out",
        tmp_path / "s.h5ad",
        "--level",
        "site",
        "--workers",
        "1",
        "--quiet",
    )
    assert rc == 0, err
    s = ad.read_h5ad(tmp_path / "s.h5ad")
    by_well = (
        pd.DataFrame(s.X, index=(s.obs.plate.astype(str) + "_" + s.obs.well.astype(str)).to_numpy())
        .groupby(level=0)
        .mean()
    )
    np.testing.assert_allclose(by_well.loc[f.obs_names].to_numpy(), f.X, rtol=1e-5, atol=1e-5)

    rc, _, err = run_cli(capsys, "map", "--embeddings", tmp_path / "f.h5ad", "--out", tmp_path / "m.h5ad")
    assert rc == 0, err
    rc, _, err = run_cli(capsys, "bench", "--map", tmp_path / "m.h5ad", "--out", tmp_path / "b")
    assert rc == 0, err
    assert json.loads((tmp_path / "b" / "summary.json").read_text())


def test_features_resume_from_finished_chunks(sim_store, tmp_path, monkeypatch):
    """Chunks left by an interrupted run are reused (a planted value shows up in the output);
    a re-run with other settings discards them."""
    import anndata as ad

    import morphoscale.features.extract as fr

    X = ad.read_h5ad(
        fr.extract_features(sim_store, tmp_path / "full.h5ad", level="site", chunk_sites=64, workers=2, progress=False)
    ).X
    out, part = tmp_path / "r.h5ad", tmp_path / "r.h5ad.partial"

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fr, "fill_cellless_sites", killed)
    with pytest.raises(KeyboardInterrupt):
        fr.extract_features(sim_store, out, level="site", chunk_sites=64, workers=2, progress=False)
    assert not out.exists() and len(list(part.glob("chunk*.npy"))) == 3
    monkeypatch.undo()
    planted = np.load(part / "chunk000000.npy")
    planted[:, 1] = -7.0
    np.save(part / "chunk000000.npy", planted)
    R = ad.read_h5ad(fr.extract_features(sim_store, out, level="site", chunk_sites=64, workers=2, progress=False)).X
    assert (R[:64, 1] == -7.0).all()
    np.testing.assert_allclose(R[64:], X[64:])
    assert not part.exists()

    monkeypatch.setattr(fr, "fill_cellless_sites", killed)
    with pytest.raises(KeyboardInterrupt):
        fr.extract_features(sim_store, out, level="site", chunk_sites=64, workers=2, overwrite=True, progress=False)
    monkeypatch.undo()
    np.save(part / "chunk000000.npy", planted)
    R = ad.read_h5ad(
        fr.extract_features(
            sim_store,
            out,
            FeatureConfig(statistic="mean"),
            level="site",
            chunk_sites=64,
            workers=2,
            overwrite=True,
            progress=False,
        )
    ).X
    assert not (R[:64, 1] == -7.0).any()


def test_features_bad_inputs_are_one_line_errors(sim_store, tmp_path, capsys):
    cases = [
        (["--nuclear-channel", "Hoechst"], "--nuclear-channel"),
        (["--flatfield", "bspline"], "--flatfield"),
        (["--statistic", "mode"], "--statistic"),
        (["--level", "crop"], "--level"),
        (["--nucleus-diameter", "-3"], "--nucleus-diameter"),
        (["--texture-levels", "1"], "--texture-levels"),
    ]
    for i, (args, expected) in enumerate(cases):
        out = tmp_path / f"o{i}.h5ad"
        rc, _, err = run_cli(capsys, "features", "--store", sim_store, "--out", out, "--quiet", *args)
        assert_one_line_error(rc, err, expected)
        assert not out.exists() and not (tmp_path / f"o{i}.h5ad.partial").exists()
    rc, _, err = run_cli(capsys, "features", "--store", tmp_path / "nope.zarr", "--out", tmp_path / "x.h5ad", "--quiet")
    assert_one_line_error(rc, err, "nope.zarr")


def test_segmentation_finds_cells_on_every_simulated_site(sim_store):
    from morphoscale.data.store import ImageStore

    store = ImageStore(sim_store)
    counts = [len(measure_site(store.read(i), store.channels, FeatureConfig())) for i in range(0, len(store), 4)]
    assert np.median(counts) >= 8 and min(counts) >= 1


def test_profile_features_are_named_the_cellprofiler_way():
    """Compartment_Category_Feature_Channel, one to one with the measured columns, in order,
    so that pycytominer's feature inference (Cells_/Nuclei_ prefixes) finds every cell feature."""
    import re

    channels = ["DNA", "AGP"]
    ours, cp = site_feature_names(channels), cellprofiler_names(channels, 8)
    assert len(cp) == len(ours) == len(set(cp))
    pairs = dict(zip(ours, cp))
    assert pairs["n_cells"] == "Image_Count_Cells"
    assert (
        pairs["nucleus_area"] == "Nuclei_AreaShape_Area"
        and pairs["cell_major_axis_length"] == "Cells_AreaShape_MajorAxisLength"
    )
    assert pairs["nucleus_DNA_integrated"] == "Nuclei_Intensity_IntegratedIntensity_DNA"
    assert pairs["cell_AGP_mean"] == "Cells_Intensity_MeanIntensity_AGP"
    assert pairs["cell_AGP_texture_homogeneity"] == "Cells_Texture_InverseDifferenceMoment_AGP_1_avg_8"
    assert pairs["cell_DNA_radial_0"] == "Cells_RadialDistribution_FracAtD_DNA_1of4"
    pattern = re.compile(r"^(Cells|Nuclei)_(AreaShape|Intensity|Texture|RadialDistribution)_[A-Za-z]+(_[A-Za-z0-9]+)*$")
    assert all(pattern.match(n) for n in cp[1:]), [n for n in cp[1:] if not pattern.match(n)]


def test_a_rebuilt_store_never_mixes_into_resumed_features(tmp_path, monkeypatch):
    """Features stopped with every chunk done, then the store rebuilt at the same path from
    other images: the resumed run starts over (the partial folder records the store's
    identity), so its rows are the new store's, as a fresh run's are."""
    import anndata as ad
    from fixtures import rxrx_rows, write_rxrx_screen

    import morphoscale.features.extract as fx
    from morphoscale.data.ingest import ingest, load_ingest_config

    rows = rxrx_rows(experiments=("E1", "E2"), wells=("B02", "B03", "C02", "C03"), sites=(1, 2))

    def build(seed: int):
        src = write_rxrx_screen(tmp_path / f"src{seed}", size=64, rows=rows, seed=seed)
        cfg = load_ingest_config(None, {"format": "rxrx", "source": str(src), "workers": 1})
        return ingest(cfg, tmp_path / "s.zarr", overwrite=True, progress=False)

    def stopped(*args):
        raise KeyboardInterrupt

    store = build(0)
    monkeypatch.setattr(fx, "fill_cellless_sites", stopped)
    with pytest.raises(KeyboardInterrupt):
        fx.extract_features(store, tmp_path / "f.h5ad", level="site", chunk_sites=4, workers=1, progress=False)
    monkeypatch.undo()
    assert len(list((tmp_path / "f.h5ad.partial").glob("chunk*.npy"))) == 4
    store = build(1)
    resumed = ad.read_h5ad(fx.extract_features(store, tmp_path / "f.h5ad", level="site", chunk_sites=4, progress=False))
    fresh = ad.read_h5ad(fx.extract_features(store, tmp_path / "g.h5ad", level="site", chunk_sites=4, progress=False))
    np.testing.assert_array_equal(resumed.X, fresh.X)
