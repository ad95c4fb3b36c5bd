"""Per-image transforms shared by every paradigm: self-standardization, augmentation, multi-crop.

All work on float tensors (C, H, W) and draw randomness from an explicit
`torch.Generator`, so a dataset item is a pure function of (index, seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def self_standardize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Z-score each channel of each image over its own H x W (no learned affine).

    Works on (C, H, W) or (N, C, H, W). A flat channel becomes zeros.
    """
    x = x.float()
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


@dataclass(frozen=True)
class Augment:
    """Random flips, 90-degree rotations, Gaussian blur and per-channel intensity jitter.

    `Augment.none()` is the identity; `Augment.random()` is the default random strategy.
    """

    flips: bool = True
    rot90: bool = True
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    jitter: float = 0.0  # per channel: x * U(1-j, 1+j) + U(-j, j), after standardization

    @classmethod
    def none(cls) -> "Augment":
        return cls(flips=False, rot90=False)

    @classmethod
    def random(cls) -> "Augment":
        return cls(flips=True, rot90=True, blur_p=0.3, jitter=0.1)

    @property
    def is_identity(self) -> bool:
        return not (self.flips or self.rot90 or self.blur_p > 0 or self.jitter > 0)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        def u() -> float:
            return float(torch.rand((), generator=g))

        if self.flips:
            if u() < 0.5:
                x = x.flip(-1)
            if u() < 0.5:
                x = x.flip(-2)
        if self.rot90:
            k = int(torch.randint(0, 4, (), generator=g))
            if k:
                x = torch.rot90(x, k, dims=(-2, -1))
        if self.blur_p > 0 and u() < self.blur_p:
            lo, hi = self.blur_sigma
            x = gaussian_blur(x, lo + (hi - lo) * u())
        if self.jitter > 0:
            c = x.shape[-3]
            scale = 1 + self.jitter * (2 * torch.rand(c, 1, 1, generator=g) - 1)
            shift = self.jitter * (2 * torch.rand(c, 1, 1, generator=g) - 1)
            x = x * scale + shift
        return x.contiguous()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel, reflect padding, kernel radius ceil(3 sigma)."""
    radius = max(1, int(torch.ceil(torch.tensor(3 * sigma))))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[-3]
    y = x.reshape(-1, c, *x.shape[-2:])
    y = torch.nn.functional.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y.reshape(x.shape)


@dataclass(frozen=True)
class MultiCrop:
    """Global and local views of one site (crop sizes in pixels)."""

    global_size: int
    n_global: int = 2
    local_size: int = 0
    n_local: int = 0

    def sizes(self) -> list[int]:
        return [self.global_size] * self.n_global + [self.local_size] * self.n_local
