"""The training interface (models/paradigm.py) for the masked-reconstruction models:
MAE-ViT, channel-agnostic MAE and MU-Net."""

from __future__ import annotations

import torch


class MaskedReconstruction:
    multi_view = False
    default_pooling = "mean"

    def training_loss(self, batch: dict, generator=None):
        imgs = batch["image"]
        losses, pred, mask = self(imgs, generator=generator)
        return losses, reconstruction_images(self, imgs[:1].detach(), pred[:1].detach(), mask[:1])

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        pass


def reconstruction_images(model, imgs, pred, mask) -> dict[str, torch.Tensor]:
    """Masked input, reconstruction (visible patches kept, hidden ones predicted), target."""
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
    pix = m.repeat_interleave(p, -2).repeat_interleave(p, -1).to(imgs.dtype)
    return {"masked": imgs * (1 - pix), "reconstruction": imgs * (1 - pix) + recon.to(imgs.dtype) * pix, "target": imgs}
