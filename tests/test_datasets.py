"""Torch datasets over the store: crops, tiles, standardization, augmentation, multi-crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import run_cli
from scipy import ndimage
from torch.utils.data import DataLoader

from morphoscale.data.datasets import CropDataset, TileDataset, tile_origins
from morphoscale.data.store import ImageStore
from morphoscale.data.transforms import Augment, MultiCrop, gaussian_blur, self_standardize
from morphoscale.errors import InputError


@pytest.fixture
def store(rxrx_screen, tmp_path, capsys) -> ImageStore:
    rc, _, err = run_cli(
        capsys,
        "ingest",
        "--format",
        "rxrx",
        "--source",
        rxrx_screen,
        "--out",
        tmp_path / "s.zarr",
        "--quiet",
        "--workers",
        "1",
    )
    assert rc == 0, err
    return ImageStore(tmp_path / "s.zarr")


def test_self_standardize_is_per_image_per_channel():
    x = torch.rand(2, 3, 16, 16) * torch.tensor([1.0, 50.0, 1000.0]).view(1, 3, 1, 1) + 7
    z = self_standardize(x)
    torch.testing.assert_close(z.mean(dim=(-2, -1)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(-2, -1), unbiased=False), torch.ones(2, 3), atol=1e-4, rtol=0)
    assert not self_standardize(torch.full((1, 4, 4), 3.0)).any()  # a flat channel is zeros, not NaN


def test_crop_is_a_standardized_window_of_the_site(store):
    ds = CropDataset(store, crop_size=32, seed=3)
    item = ds[5]
    img = item["image"]
    assert img.shape == (6, 32, 32) and img.dtype == torch.float32
    site = torch.from_numpy(store.read(5)).float()
    # find the window: exactly one position reproduces the crop
    hits = [
        (y, x)
        for y in range(33)
        for x in range(33)
        if torch.allclose(self_standardize(site[:, y : y + 32, x : x + 32]), img, atol=1e-5)
    ]
    assert len(hits) == 1
    assert item["site"] == 5 and item["label"] == ds.label_names.index(store.sites.perturbation[5])


def test_crops_are_reproducible_and_vary_with_epoch(store):
    a, b = CropDataset(store, 32, Augment.random(), seed=1), CropDataset(store, 32, Augment.random(), seed=1)
    torch.testing.assert_close(a[3]["image"], b[3]["image"])
    b.set_epoch(1)
    assert not torch.equal(a[3]["image"], b[3]["image"])
    c = CropDataset(store, 32, Augment.random(), seed=2)
    assert not torch.equal(a[3]["image"], c[3]["image"])


def test_workers_do_not_change_the_items(store):
    ds = CropDataset(store, 32, Augment.random(), seed=0)
    one = torch.cat([b["image"] for b in DataLoader(ds, batch_size=4, num_workers=0)])
    two = torch.cat([b["image"] for b in DataLoader(ds, batch_size=4, num_workers=2)])
    torch.testing.assert_close(one, two)


def test_channel_subset_and_unknown_channel(store):
    ds = CropDataset(store, 16, channels=["Mito", "DNA"])
    assert ds[0]["image"].shape[0] == 2 and ds.channels == ["Mito", "DNA"]
    with pytest.raises(InputError, match="unknown channel"):
        CropDataset(store, 16, channels=["GFP"])
    with pytest.raises(InputError, match="crop size 65 does not fit"):
        CropDataset(store, 65)


def test_multicrop_views_have_their_sizes(store):
    ds = CropDataset(
        store, 0, Augment.random(), multicrop=MultiCrop(global_size=48, n_global=2, local_size=16, n_local=4)
    )
    views = ds[0]["views"]
    assert [v.shape[-1] for v in views] == [48, 48, 16, 16, 16, 16]
    assert all(v.shape[0] == 6 for v in views)


def test_augment_none_is_identity_and_flips_rotations_keep_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 20, 20)
    assert torch.equal(Augment.none()(x, g), x)
    y = Augment(flips=True, rot90=True)(x, g)
    torch.testing.assert_close(torch.sort(y.flatten()).values, torch.sort(x.flatten()).values)
    # each channel moves with the others
    assert any(
        torch.equal(y, torch.rot90(x.flip(d) if d is not None else x, k, (-2, -1)))
        for k in range(4)
        for d in (None, -1, -2)
    )


def test_gaussian_blur_matches_scipy():
    x = torch.randn(2, 32, 32)
    sigma = 1.3
    radius = int(np.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    ref = np.stack(
        [
            ndimage.correlate1d(ndimage.correlate1d(c, k, axis=1, mode="mirror"), k, axis=0, mode="mirror")
            for c in x.numpy()
        ]
    )
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), ref, atol=1e-5)


@pytest.mark.parametrize(
    "length,tile,stride,remainder,expected",
    [
        (64, 32, 32, "shift", [0, 32]),
        (70, 32, 32, "shift", [0, 32, 38]),
        (70, 32, 32, "center", [3, 35]),
        (70, 32, 32, "drop", [0, 32]),
        (64, 32, 16, "shift", [0, 16, 32]),
    ],
)
def test_tile_origins(length, tile, stride, remainder, expected):
    assert tile_origins(length, tile, stride, remainder) == expected


def test_tiles_cover_every_pixel_of_every_site(store):
    ds = TileDataset(store, tile_size=24)  # 64 = 24 + 24 + 16: the last tile is shifted
    assert ds.tiles_per_site == 9 and len(ds) == 9 * len(store)
    for s in (0, 7):
        covered = np.zeros((64, 64), bool)
        site = torch.from_numpy(store.read(s)).float()
        for t in range(ds.tiles_per_site):
            item = ds[s * ds.tiles_per_site + t]
            y, x = item["y"], item["x"]
            assert item["site"] == s
            torch.testing.assert_close(item["image"], self_standardize(site[:, y : y + 24, x : x + 24]))
            covered[y : y + 24, x : x + 24] = True
        assert covered.all()


def test_tiles_in_site_order_through_a_loader(store):
    ds = TileDataset(store, tile_size=32)
    sites = torch.cat([b["site"] for b in DataLoader(ds, batch_size=5, num_workers=2)])
    assert sites.tolist() == sorted(sites.tolist()) and sites.tolist().count(0) == 4


def test_jump_field_channel_files_are_the_stains_cellprofiler_measured(examples_dir):
    """The field's own CellProfiler Nuclei.csv names each stain's intensity per nucleus: the one-
    to-one assignment of channel files to stains that best ranks with it (Spearman, a 6 px disk
    at each nucleus centre) is the mapping the example's load_data uses (#23: AGP and Mito
    were swapped; JUMP's channel_mapping.csv for the Broad Phenix agrees: Mito 1, AGP 2)."""
    import itertools

    import numpy as np
    import pandas as pd
    import tifffile
    from scipy import stats

    from morphoscale.data.examples import JUMP_FIELD_FILES

    field = examples_dir / "jump-pilot-field"
    nuclei = pd.read_csv(field / "Nuclei.csv")
    nuclei = nuclei[nuclei["Location_Center_X"].between(7, 1072) & nuclei["Location_Center_Y"].between(7, 1072)]
    yy, xx = np.mgrid[-6:7, -6:7]
    disk = yy**2 + xx**2 <= 36
    centres = list(
        zip(nuclei["Location_Center_X"].round().astype(int), nuclei["Location_Center_Y"].round().astype(int))
    )
    stains = list(JUMP_FIELD_FILES)
    files = sorted(set(JUMP_FIELD_FILES.values()))
    rho = {}
    for f in files:
        img = tifffile.imread(field / f).astype(np.float64)
        means = [img[y - 6 : y + 7, x - 6 : x + 7][disk].mean() for x, y in centres]
        for s in stains:
            rho[f, s] = stats.spearmanr(means, nuclei[f"Intensity_MeanIntensity_{s}"]).statistic
    best = max(itertools.permutations(files), key=lambda perm: sum(rho[f, s] for f, s in zip(perm, stains)))
    assert dict(zip(stains, best)) == JUMP_FIELD_FILES
    assert rho[JUMP_FIELD_FILES["Mito"], "Mito"] > rho[JUMP_FIELD_FILES["Mito"], "AGP"] + 0.1
    assert rho[JUMP_FIELD_FILES["AGP"], "AGP"] > rho[JUMP_FIELD_FILES["AGP"], "Mito"] + 0.1
