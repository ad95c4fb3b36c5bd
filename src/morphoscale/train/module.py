"""The model side of training (a LightningModule) for every masked-reconstruction model:
optimizer, warm-up + cosine schedule, per-step seeding that makes a resumed run exact."""

from __future__ import annotations

import math
import time

import lightning as L
import torch

from ..models.registry import create_model


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up to 1, then cosine down to min_ratio at `total` (one cycle)."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class MaskedModelingModule(L.LightningModule):
    def __init__(self, preset: str, channels: list[str], model_overrides: dict | None = None, optimizer: str = "adamw",
                 lr: float = 1.5e-4, weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.95),
                 warmup_steps: int = 100, max_steps: int = 1000, min_lr_ratio: float = 0.0, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(preset, channels, **(model_overrides or {}))
        self._t_last: float | None = None

    def forward(self, imgs, generator=None):
        if getattr(self.model.cfg, "channel_agnostic", False):
            return self.model(imgs, generator=generator, channel_ids=self.model.channel_ids(self.hparams.channels, imgs.device))
        return self.model(imgs, generator=generator)

    def step_generator(self, step: int) -> torch.Generator:
        """Masking and stochastic depth depend only on (seed, step): a resumed run redraws the same."""
        torch.manual_seed(self.hparams.seed * 1_000_003 + step)
        g = torch.Generator(device=self.device)
        g.manual_seed(self.hparams.seed * 1_000_003 + step + 7)
        return g

    def training_step(self, batch, batch_idx):
        imgs = batch["image"]
        losses, pred, mask = self(imgs, generator=self.step_generator(self.global_step))
        bs = imgs.shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=False, batch_size=bs)
        self.log("loss", losses["loss"].detach(), prog_bar=True, logger=False, batch_size=bs)
        now = time.perf_counter()
        if self._t_last is not None:
            self.log("img_s", bs / max(now - self._t_last, 1e-9), prog_bar=True, batch_size=bs)
        self._t_last = now
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        self._last = (imgs[:1].detach(), pred[:1].detach(), mask[:1].detach())
        return losses["loss"]

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 or n.endswith(("cls_token", "mask_token")) else decay).append(p)
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if hp.optimizer == "adamw":
            opt = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        elif hp.optimizer == "lion":
            from timm.optim import Lion

            opt = Lion(groups, lr=hp.lr, betas=tuple(hp.betas))
        else:
            raise ValueError(f"unknown optimizer {hp.optimizer}")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, hp.warmup_steps, hp.max_steps, hp.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self) -> None:
        # continue the data stream where the checkpoint left it
        dm = self.trainer.datamodule
        if dm is not None and hasattr(dm, "sampler"):
            dm.sampler.set_start(self.global_step * dm.batch_size)


def reconstruction_images(model, imgs, pred, mask) -> dict[str, torch.Tensor]:
    p = model.cfg.patch_size
    N, C, H, W = imgs.shape
    grid = (H // p, W // p)
    if hasattr(model, "unpatchify") and getattr(model.cfg, "channel_agnostic", False):
        recon = model.unpatchify(pred, grid, C)
        m = mask.reshape(N, C, grid[0], grid[1])
    else:
        if hasattr(model, "unpatchify"):
            recon = model.unpatchify(pred, grid)
        else:  # MU-Net: patches in MAE order
            recon = torch.einsum("nhwpqc->nchpwq", pred.reshape(N, grid[0], grid[1], p, p, C)).reshape(N, C, H, W)
        m = mask.reshape(N, 1, grid[0], grid[1]).expand(N, C, -1, -1)
    pix = m.repeat_interleave(p, -2).repeat_interleave(p, -1)
    return {"masked": imgs * (1 - pix), "reconstruction": imgs * (1 - pix) + recon * pix, "target": imgs}
