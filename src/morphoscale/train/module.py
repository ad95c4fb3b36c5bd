"""The model side of training (a LightningModule) for every masked-reconstruction model:
optimizer, warm-up + cosine schedule, per-step seeding that makes a resumed run exact."""

from __future__ import annotations

import math
import time

import lightning as L
import torch
import torch.nn.functional as F

from ..models.noise import ShardGenerator
from ..models.registry import create_model


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up to 1, then cosine down to min_ratio at `total` (one cycle)."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class TrainingModule(L.LightningModule):
    """Trains any model of the registry through its `training_loss` (models/paradigm.py):
    masked autoencoders, weakly supervised classifiers, autoencoders, BYOL."""

    def __init__(
        self,
        preset: str,
        channels: list[str],
        model_overrides: dict | None = None,
        optimizer: str = "adamw",
        lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        max_steps: int = 1000,
        min_lr_ratio: float = 0.0,
        seed: int = 0,
        classes: list[str] | None = None,
        n_global: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(preset, channels, n_classes=len(classes or []), **(model_overrides or {}))
        self._t_last: float | None = None
        self._preview: dict | None = None
        self._loss = self.model.training_loss

    def compile_step(self, warn=None) -> None:
        """torch.compile the model's loss (forward and backward); the weights and their
        checkpoint keys are untouched. Eager, with one warning line, where compiling fails."""
        from ..compute import compiled

        self._loss = compiled(self.model.training_loss, f"{self.hparams.preset}'s training step", warn)

    def forward(self, batch: dict, generator=None):
        return self._loss(self.model_batch(batch), generator)

    def on_fit_start(self) -> None:
        """On a GPU, CNNs run channels-last (NHWC: what cuDNN's fastest convolutions take)."""
        self._channels_last = self.device.type == "cuda" and any(
            isinstance(m, torch.nn.Conv2d) and m.kernel_size != m.stride for m in self.model.modules()
        )
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)

    def model_batch(self, batch: dict) -> dict:
        """Multi-crop views as the model takes them: smaller (local) views resized to the
        model's input size; single-view models see every view as one more image."""
        if "views" not in batch:
            if self.model.multi_view:
                raise ValueError(
                    f"{self.hparams.preset} needs several views per site (crop: one with views: 2, or crop: multi)"
                )
            if getattr(self, "_channels_last", False):
                return {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}
            return batch
        size = max(v.shape[-1] for v in batch["views"])
        views = [
            v if v.shape[-1] == size else F.interpolate(v, size=(size, size), mode="bilinear", align_corners=False)
            for v in batch["views"]
        ]
        if self.model.multi_view:
            return {**batch, "views": views, "n_global": self.hparams.n_global}
        k = len(views)
        return {"image": torch.cat(views), "label": batch["label"].repeat(k), "batch": batch["batch"].repeat(k)}

    def step_generator(self, step: int) -> torch.Generator:
        """Masking and stochastic depth depend only on (seed, step): a resumed run redraws the same."""
        torch.manual_seed(self.hparams.seed * 1_000_003 + step)
        g = torch.Generator(device=self.device)
        g.manual_seed(self.hparams.seed * 1_000_003 + step + 7)
        return g

    def images_per_step(self, batch: dict) -> int:
        return sum(v.shape[0] for v in batch["views"]) if "views" in batch else batch["image"].shape[0]

    def training_step(self, batch, batch_idx):
        world = self.trainer.world_size
        g = self.step_generator(self.global_step)
        if world > 1:  # each rank masks its rows of the global batch as one process would
            g = ShardGenerator(g, self.trainer.global_rank, world)
        losses, preview = self(batch, generator=g)
        n = self.images_per_step(batch)
        sync = world > 1  # logged values: means over the global batch (equal shards)
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=False, batch_size=n, sync_dist=sync
        )
        self.log("loss", losses["loss"].detach(), prog_bar=True, logger=False, batch_size=n, sync_dist=sync)
        now = time.perf_counter()
        if self._t_last is not None:
            self.log("img_s", n * world / max(now - self._t_last, 1e-9), prog_bar=True, batch_size=n)
        self._t_last = now
        self.log("train/images_seen", float((self.global_step + 1) * n * world), batch_size=n)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        self._preview = preview
        return losses["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.model.after_optimizer_step(self.global_step, self.hparams.max_steps)

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or n.endswith(("cls_token", "mask_token")) else decay).append(p)
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if hp.optimizer == "adamw":
            opt = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        elif hp.optimizer == "lion":
            from timm.optim import Lion

            opt = Lion(groups, lr=hp.lr, betas=tuple(hp.betas))
        else:
            raise ValueError(f"unknown optimizer {hp.optimizer}")
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, hp.warmup_steps, hp.max_steps, hp.min_lr_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # what an embedding records of the model it came from
    _UNTRAINED_KEYS = ("preset", "channels", "model_overrides", "seed", "classes", "n_global")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.random_init = bool(checkpoint.get("random_init", False))
        self.trained_steps = int(checkpoint.get("global_step", 0))

    def provenance(self) -> dict:
        """The training settings, or, for a random init, only what defines the untrained
        weights: an untrained model records no learning rate or steps it never used."""
        hp = dict(self.hparams)
        if getattr(self, "random_init", False):
            return {"random_init": True, **{k: hp[k] for k in self._UNTRAINED_KEYS if k in hp}}
        return {**hp, "trained_steps": getattr(self, "trained_steps", None)}
