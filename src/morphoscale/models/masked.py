"""The training interface (models/paradigm.py) for the masked-reconstruction models:
MAE-ViT, channel-agnostic MAE and MU-Net.

Beside the loss, every step measures two floors on the same images and the same mask
(train/learning_check.py reads them): `trivial`, the loss of predicting zero (the mean, in
self-standardized units), and `interpolation`, the loss of a Gaussian interpolation of the
visible pixels: what a model that only learned to fill holes from their surroundings reaches
(under norm_pix_loss, its patches standardized as the target's are and shrunk by one
least-squares factor: a standardized guess that is only partly right costs more than zero).
"""

from __future__ import annotations

import math

import torch

from .losses import mae_loss, standardize_patches


class MaskedReconstruction:
    multi_view = False
    default_pooling = "mean"

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C), patches in row-major order, pixels (p, p, C) inside."""
        p = self.cfg.patch_size
        N, C, H, W = imgs.shape
        if H % p or W % p:
            raise ValueError(f"image {H}x{W} is not a multiple of the patch size {p}")
        x = imgs.reshape(N, C, H // p, p, W // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(N, (H // p) * (W // p), p * p * C)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        p, C = self.cfg.patch_size, self.cfg.in_chans
        gh, gw = grid
        x = x.reshape(x.shape[0], gh, gw, p, p, C)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], C, gh * p, gw * p)

    def forward_loss(self, imgs, pred, mask):
        """The MAE loss (models/losses.py) of predicted patches against the image's, on the hidden ones."""
        return mae_loss(
            pred,
            self.patchify(imgs),
            mask,
            self.cfg.patch_size,
            self.cfg.in_chans,
            self.cfg.fourier_weight,
            self.cfg.norm_pix_loss,
        )

    def training_loss(self, batch: dict, generator=None):
        imgs = batch["image"]
        losses, pred, mask = self(imgs, generator=generator)
        with torch.no_grad():
            hidden = pixel_mask(self, mask, imgs.shape).to(imgs.dtype)
            losses["trivial"] = self.forward_loss(imgs, torch.zeros_like(pred), mask)["loss"].detach()
            guess = self.patchify(interpolate_visible(imgs, hidden, sigma=self.cfg.patch_size / 2))
            if self.cfg.norm_pix_loss:
                guess = fit_to_standardized(guess, self.patchify(imgs), mask)
            losses["interpolation"] = self.forward_loss(imgs, guess, mask)["loss"].detach()
        return losses, reconstruction_images(self, imgs[:1].detach(), pred[:1].detach(), mask[:1])

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        pass


def fit_to_standardized(guess: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The best an interpolating model does against norm_pix_loss's standardized targets: its
    patches standardized, times the one factor that minimizes the squared error on the hidden
    patches (the correlation of guess and target; a model can learn one global shrinkage)."""
    g, t, w = standardize_patches(guess), standardize_patches(target), mask[..., None]
    return g * ((g * t * w).sum() / (g * g * w).sum().clamp_min(1e-12))


def pixel_mask(model, mask: torch.Tensor, shape) -> torch.Tensor:
    """(N, tokens) mask, 1 = hidden -> (N, C, H, W) pixels, 1 = hidden (per channel for the
    channel-agnostic model, whose tokens are per channel)."""
    p = model.cfg.patch_size
    N, C, H, W = shape
    gh, gw = H // p, W // p
    if getattr(model.cfg, "channel_agnostic", False):
        m = mask.reshape(N, C, gh, gw)
    else:
        m = mask.reshape(N, 1, gh, gw).expand(N, C, gh, gw)
    return m.repeat_interleave(p, -2).repeat_interleave(p, -1)


def gaussian_band(n: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n, n) matrix of a 1-D Gaussian blur truncated at 3 sigma, zero outside the image:
    x @ band blurs the rows of x (as a zero-padded convolution, by one matrix product)."""
    r = max(1, math.ceil(3 * sigma))
    i = torch.arange(n, device=device, dtype=dtype)
    d = i[:, None] - i[None, :]
    k = torch.exp(-0.5 * (d / sigma) ** 2) * (d.abs() <= r)
    return k / torch.exp(-0.5 * (torch.arange(-r, r + 1, device=device, dtype=dtype) / sigma) ** 2).sum()


def interpolate_visible(imgs: torch.Tensor, hidden: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each hidden pixel as the Gaussian-weighted mean of the visible pixels around it
    (normalized convolution, per channel; 0 where none is within 3 sigma). The blur is two
    matrix products with banded matrices: a few ms for a CPU batch, not a convolution's 100."""
    N, C, H, W = imgs.shape
    bh, bw = gaussian_band(H, sigma, imgs.device, imgs.dtype), gaussian_band(W, sigma, imgs.device, imgs.dtype)
    visible = (1 - hidden).to(imgs.dtype)

    def blur(x):
        return bh.T @ (x @ bw)  # rows, then columns (both bands are symmetric)

    num, den = blur(imgs * visible), blur(visible)
    filled = torch.where(den > 1e-6, num / den.clamp_min(1e-6), torch.zeros_like(num))
    return imgs * visible + filled * hidden


def reconstruction_images(model, imgs, pred, mask) -> dict[str, torch.Tensor]:
    """Masked input, reconstruction (visible patches kept, hidden ones predicted), target."""
    p = model.cfg.patch_size
    N, C, H, W = imgs.shape
    grid = (H // p, W // p)
    if getattr(model.cfg, "channel_agnostic", False):
        recon = model.unpatchify(pred, grid, C)
    else:
        recon = model.unpatchify(pred, grid)
    pix = pixel_mask(model, mask, imgs.shape).to(imgs.dtype)
    return {"masked": imgs * (1 - pix), "reconstruction": imgs * (1 - pix) + recon.to(imgs.dtype) * pix, "target": imgs}
