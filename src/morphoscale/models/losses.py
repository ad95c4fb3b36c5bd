"""The MAE loss for cell images: (1 - a) * MSE on masked patches + a * L1 on Fourier magnitudes.

The Fourier term, exactly: for every masked patch and every channel separately, the 2-D
discrete Fourier transform over the patch's p x p pixels (torch.fft.fft2, no shift, no
normalization, the full complex spectrum), its magnitude |F|, and the mean absolute
difference between prediction and target magnitudes over the p x p frequencies and C
channels; then the mean over masked patches, like the MSE term. a = 0.01 by default.
"""

from __future__ import annotations

import torch


def masked_mean(per_patch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


def fourier_l1(pred: torch.Tensor, target: torch.Tensor, p: int, C: int) -> torch.Tensor:
    """(N, L, p*p*C) patches -> (N, L): mean |(|fft2(pred)| - |fft2(target)|)| per patch."""
    N, L, _ = pred.shape
    a = torch.fft.fft2(pred.float().reshape(N, L, p, p, C).permute(0, 1, 4, 2, 3)).abs()
    b = torch.fft.fft2(target.float().reshape(N, L, p, p, C).permute(0, 1, 4, 2, 3)).abs()
    return (a - b).abs().mean(dim=(-3, -2, -1))


def standardize_patches(x: torch.Tensor) -> torch.Tensor:
    """Each patch (last dim) by its own mean and variance: the target of norm_pix_loss (He et al. 2022)."""
    return (x - x.mean(dim=-1, keepdim=True)) / (x.var(dim=-1, keepdim=True) + 1e-6) ** 0.5


def mae_loss(pred, target, mask, p: int, C: int, fourier_weight: float = 0.01, norm_pix_loss: bool = False) -> dict:
    """Loss terms over the masked patches only (mask: 1 = hidden)."""
    if norm_pix_loss:
        target = standardize_patches(target)
    mse = masked_mean(((pred - target) ** 2).mean(dim=-1), mask)
    fft = (
        masked_mean(fourier_l1(pred, target, p, C), mask) if fourier_weight > 0 else torch.zeros((), device=pred.device)
    )
    return {"loss": (1 - fourier_weight) * mse + fourier_weight * fft, "mse": mse, "fourier": fft}
