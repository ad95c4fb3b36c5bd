"""Torch datasets over an image store.

- `CropDataset`: random crops (one, or multi-crop views) of each site, for training.
- `TileDataset`: non-overlapping tiles covering each site, for embedding.

Both read one site chunk at a time from zarr (never the whole store), open the
store lazily in each DataLoader worker, and self-standardize every crop.
Randomness comes from (seed, epoch, index), so an item is reproducible and
independent of the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from .store import ImageStore
from .transforms import Augment, MultiCrop, self_standardize


def column_codes(store: ImageStore, column: str) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a site-table column (sorted names), and the names."""
    codes, names = store.sites[column].astype(str).factorize(sort=True)
    return codes.astype(np.int64), list(names)


class CropDataset(Dataset):
    """Random `crop_size` crops of each site; item i is site i % n_sites.

    Returns a dict: `image` (C, h, w) float32, or `views` (a list of such tensors)
    when `multicrop` is set (global and local crops at independent places) or
    `n_views` > 1 (that many augmentations of one crop); `site` (row of the site
    table), `label` (perturbation code), `batch` (batch code).

    order: "cycle" (site i % n), "shuffle" (a seeded permutation per pass), or
    "by_batch": consecutive groups of `group_size` items come from one experimental
    batch (batches in a seeded order, each batch's sites shuffled), for training with
    per-batch normalization statistics.
    """

    def __init__(
        self,
        store: ImageStore | str | Path,
        crop_size: int,
        augment: Augment | None = None,
        multicrop: MultiCrop | None = None,
        channels: list[str] | None = None,
        sites: np.ndarray | None = None,
        seed: int = 0,
        length: int | None = None,
        order: Literal["cycle", "shuffle", "by_batch"] = "cycle",
        n_views: int = 1,
        group_size: int = 1,
        holdout_width: float = 0.0,
        raw: bool = False,
    ):
        self.store = store if isinstance(store, ImageStore) else ImageStore(store)
        h, w = self.store.image_size
        sizes = multicrop.sizes() if multicrop else [crop_size]
        too_big = [s for s in sizes if s > min(h, w) or s <= 0]
        if too_big:
            raise InputError(f"crop size {too_big[0]} does not fit the store's {h}x{w} images")
        # a spatial hold-out: crops stay left of this column, so the right side is never seen
        self.crop_width = int(round(w * (1.0 - holdout_width)))
        if max(sizes) > self.crop_width:
            raise InputError(
                f"holdout_width {holdout_width}: crops of {max(sizes)} px do not fit the remaining {self.crop_width} px of width"
            )
        self.crop_size = crop_size
        self.augment = augment or Augment.none()
        self.multicrop = multicrop
        self.channel_idx = self.store.channel_indices(channels)
        self.channels = [self.store.channels[i] for i in self.channel_idx]
        self.sites = np.arange(len(self.store)) if sites is None else np.asarray(sites)
        self.length = length or len(self.sites)
        self.seed = seed
        self.epoch = 0
        self.order = order
        self._perms: dict[tuple, np.ndarray] = {}  # seeded permutations by key, a few at a time
        self.labels, self.label_names = column_codes(self.store, "perturbation")
        self.batches, self.batch_names = column_codes(self.store, "batch")
        self.n_views = n_views
        self.group_size = group_size
        # raw: items carry the crop as stored (uint8 stays uint8: a quarter of the bytes to a
        # GPU) and the augmentation drawn for it; transforms.standardize_and_augment finishes
        # the batch on the device. One view per site only.
        if raw and (multicrop or n_views > 1):
            raise ValueError("raw crops (transforms on the device) are for one view per site")
        self.raw = raw
        if order == "by_batch":
            site_batches = self.batches[self.sites]
            self._domains = [self.sites[site_batches == b] for b in np.unique(site_batches)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _generator(self, index: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFFFFFFFFFFFFFF)
        return g

    def _cut(self, site: np.ndarray, size: int, g: torch.Generator) -> torch.Tensor:
        """A crop at a random place, as stored."""
        _, h, w = site.shape
        y = int(torch.randint(0, h - size + 1, (), generator=g))
        x = int(torch.randint(0, min(w, self.crop_width) - size + 1, (), generator=g))
        return torch.from_numpy(np.ascontiguousarray(site[:, y : y + size, x : x + size]))

    def _crop(self, site: np.ndarray, size: int, g: torch.Generator) -> torch.Tensor:
        return self_standardize(self._cut(site, size, g))

    def _view(self, site: np.ndarray, size: int, g: torch.Generator) -> torch.Tensor:
        return self.augment(self._crop(site, size, g), g)

    def site_of(self, index: int) -> int:
        """Item -> site: cycling in order, or a fresh seeded permutation of the sites per pass."""
        n = len(self.sites)
        if self.order == "by_batch":
            return self._site_by_batch(index)
        if self.order == "cycle":
            return int(self.sites[index % n])
        k, i = divmod(index, n)
        return int(self.sites[self._permutation((self.seed, self.epoch, k), n)[i]])

    def _site_by_batch(self, index: int) -> int:
        group, r = divmod(index, self.group_size)
        n_dom = len(self._domains)
        cycle, slot = divmod(group, n_dom)
        d = int(self._permutation((self.seed, self.epoch, cycle, 1), n_dom)[slot])
        sites = self._domains[d]
        j = cycle * self.group_size + r  # this batch's running item count
        k, i = divmod(j, len(sites))
        return int(sites[self._permutation((self.seed, self.epoch, d, k, 2), len(sites))[i]])

    def _permutation(self, key: tuple, n: int) -> np.ndarray:
        if key not in self._perms:
            if len(self._perms) > 64:
                self._perms.clear()
            self._perms[key] = np.random.default_rng(list(key)).permutation(n)
        return self._perms[key]

    def __getitem__(self, index: int) -> dict:
        s = self.site_of(index)
        site = self.store.read(s, self.channel_idx)
        g = self._generator(index)
        item = {"site": s, "label": int(self.labels[s]), "batch": int(self.batches[s])}
        if self.multicrop:
            item["views"] = [self._view(site, size, g) for size in self.multicrop.sizes()]
        elif self.n_views > 1:
            crop = self._crop(site, self.crop_size, g)
            item["views"] = [self.augment(crop, g) for _ in range(self.n_views)]
        elif self.raw:
            crop = self._cut(site, self.crop_size, g)
            item["image"] = crop if crop.dtype == torch.uint8 else crop.float()
            item["aug"] = self.augment.draw(g, crop.shape[0])
        else:
            item["image"] = self._view(site, self.crop_size, g)
        return item


@dataclass(frozen=True)
class Tile:
    site: int
    y: int
    x: int


def tile_origins(length: int, tile: int, stride: int, remainder: str) -> list[int]:
    """Tile start positions along one axis.

    remainder="shift" (default): a grid from 0 by `stride`; when it misses the last
    pixels, one more tile ends flush with the edge, so every pixel is covered (that
    last tile overlaps its neighbour by less than a tile).
    remainder="center": the grid is centred and the leftover margin (< stride) dropped.
    remainder="drop": the grid starts at 0 and the leftover at the far edge is dropped.
    """
    if tile > length:
        raise InputError(f"tile size {tile} is larger than the image side {length}")
    n = (length - tile) // stride + 1
    starts = [i * stride for i in range(n)]
    covered = starts[-1] + tile
    if remainder == "shift":
        if covered < length:
            starts.append(length - tile)
    elif remainder == "center":
        off = (length - covered) // 2
        starts = [s + off for s in starts]
    elif remainder != "drop":
        raise ValueError(f"unknown remainder policy {remainder!r}")
    return starts


class TileDataset(Dataset):
    """Every tile of every site, in site order; item = (tile tensor, tile index)."""

    def __init__(
        self,
        store: ImageStore | str | Path,
        tile_size: int,
        stride: int | None = None,
        remainder: Literal["shift", "center", "drop"] = "shift",
        channels: list[str] | None = None,
        sites: np.ndarray | None = None,
        normalize=self_standardize,
    ):
        self.store = store if isinstance(store, ImageStore) else ImageStore(store)
        self.normalize = normalize  # the encoder's input normalization (transforms.InputNorm)
        self.tile_size = tile_size
        self.stride = stride or tile_size
        h, w = self.store.image_size
        ys = tile_origins(h, tile_size, self.stride, remainder)
        xs = tile_origins(w, tile_size, self.stride, remainder)
        self.tiles_per_site = len(ys) * len(xs)
        self.origins = [(y, x) for y in ys for x in xs]
        self.channel_idx = self.store.channel_indices(channels)
        self.sites = np.arange(len(self.store)) if sites is None else np.asarray(sites)
        self._cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.sites) * self.tiles_per_site

    def tile(self, index: int) -> Tile:
        s, t = divmod(index, self.tiles_per_site)
        y, x = self.origins[t]
        return Tile(int(self.sites[s]), y, x)

    def __getitem__(self, index: int) -> dict:
        t = self.tile(index)
        # Consecutive tiles share a site: decode it once.
        if self._cache is None or self._cache[0] != t.site:
            self._cache = (t.site, self.store.read(t.site, self.channel_idx))
        site = self._cache[1]
        k = self.tile_size
        crop = torch.from_numpy(np.ascontiguousarray(site[:, t.y : t.y + k, t.x : t.x + k]))
        return {"image": self.normalize(crop), "site": t.site, "y": t.y, "x": t.x}
