"""The data side of training (a LightningDataModule): random crops of the store, streamed
in a seeded order that a resumed run continues exactly."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from ..data.datasets import CropDataset
from ..data.store import ImageStore
from ..data.transforms import Augment, standardize_and_augment


class ResumableSampler(Sampler[int]):
    """Yields sample numbers start, start + 1, ..., total - 1; the dataset maps each number to a
    (site, crop) deterministically, so resuming at `start` replays exactly what was left.

    Under data parallelism (world > 1) each rank yields only its slice of every global batch
    of `global_batch` numbers: rank r takes the r-th of `world` equal parts. The ranks together
    see each number once, and the same numbers per step as one process would."""

    def __init__(self, total: int, global_batch: int = 1, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError(f"a global batch of {global_batch} does not split over {world} processes")
        self.total = total
        self.global_batch = global_batch
        self.rank = rank
        self.world = world
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = max(0, min(start, self.total))

    def __iter__(self):
        if self.world == 1:
            return iter(range(self.start, self.total))
        b = self.global_batch // self.world
        first = self.start - self.start % self.global_batch
        return (
            k
            for step in range(first, self.total, self.global_batch)
            for k in range(step + self.rank * b, min(step + (self.rank + 1) * b, self.total))
        )

    def __len__(self) -> int:
        if self.world == 1:
            return self.total - self.start
        first = self.start - self.start % self.global_batch
        return (self.total - first) // self.world


class StoreDataModule(L.LightningDataModule):
    def __init__(
        self,
        store: str,
        crop_size: int,
        batch_size: int,
        max_steps: int,
        channels: list[str] | None = None,
        augment: str = "none",
        num_workers: int = 0,
        seed: int = 0,
        multicrop=None,
        n_views: int = 1,
        group_by_batch: bool = False,
        holdout_width: float = 0.0,
        sites=None,
        device_transforms: bool = False,
        prefetch: int = 4,
    ):
        super().__init__()
        self.store_path = store
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.channels = channels
        self.augment = Augment.random() if augment == "random" else Augment.none()
        self.num_workers = num_workers
        self.seed = seed
        self.multicrop = multicrop
        self.n_views = n_views
        self.group_by_batch = group_by_batch
        self.holdout_width = holdout_width
        self.sites = sites  # site rows to crop from (None: all); the rest is held out
        self.device_transforms = (
            device_transforms  # crops cut by the workers, standardized and augmented where the batch lands
        )
        self.prefetch = prefetch
        self.sampler = ResumableSampler(max_steps * batch_size, batch_size)
        self.dataset: CropDataset | None = None
        self.per_device_batch = batch_size

    def setup(self, stage: str | None = None) -> None:
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if self.batch_size % world:
            from ..errors import ConfigError

            raise ConfigError(
                f"key 'batch_size': the global batch of {self.batch_size} does not split over {world} processes"
            )
        if self.sampler.world != world:
            self.sampler = ResumableSampler(self.max_steps * self.batch_size, self.batch_size, rank, world)
        self.per_device_batch = self.batch_size // world
        if self.dataset is None:
            store = ImageStore(self.store_path)
            self.dataset = CropDataset(
                store,
                self.crop_size,
                self.augment,
                channels=self.channels,
                seed=self.seed,
                length=self.max_steps * self.batch_size,
                multicrop=self.multicrop,
                n_views=self.n_views,
                order="by_batch" if self.group_by_batch else "shuffle",
                group_size=self.per_device_batch,
                holdout_width=self.holdout_width,
                sites=self.sites,
                raw=self.device_transforms,
            )

    def train_dataloader(self) -> DataLoader:
        """Workers (each opens its own store handle: ImageStore pickles without one) stay up
        between epochs and keep `prefetch` batches ready; pinned memory on a GPU."""
        workers = self.num_workers > 0
        return DataLoader(
            self.dataset,
            batch_size=self.per_device_batch,
            sampler=self.sampler,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=True,
            persistent_workers=workers,
            prefetch_factor=self.prefetch if workers else None,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if "aug" in batch:
            batch = dict(batch)
            batch["image"] = standardize_and_augment(batch["image"], batch.pop("aug"))
        return batch
