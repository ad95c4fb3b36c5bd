"""Masked U-Net (MU-Net): a convolutional U-Net that reconstructs masked patches, with the
MAE loss family.

Its skip connections carry the encoder's shallow stages to the decoder around the
bottleneck, so the bottleneck alone need not hold what the reconstruction uses. The
readout (models/readout.py) can take any encoder stage or the bottleneck (`layer`: 0 ..
levels - 1 the stages, -1 the bottleneck), pooled by `mean`, or `concat`: the global
averages of every stage and the bottleneck, which is what the decoder reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .masked import MaskedReconstruction
from .noise import batch_uniform
from .readout import pool_stages


@dataclass
class UNetConfig:
    in_chans: int = 6
    base_width: int = 32
    levels: int = 4
    patch_size: int = 8  # masking granularity
    mask_ratio: float = 0.75
    fourier_weight: float = 0.01
    norm_pix_loss: bool = False


def _block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.GroupNorm(min(8, cout), cout),
        nn.GELU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(min(8, cout), cout),
        nn.GELU(),
    )


class MaskedUNet(MaskedReconstruction, nn.Module):
    # every stage and the bottleneck, pooled: chosen on simulator seed 1 (docs/embed.md)
    default_pooling = "concat"

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.base_width * 2**i for i in range(cfg.levels)]
        self.down = nn.ModuleList()
        cin = cfg.in_chans
        for w in widths:
            self.down.append(_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(widths[-1], widths[-1] * 2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        cin = widths[-1] * 2
        for w in reversed(widths):
            self.up.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            self.dec.append(_block(2 * w, w))
            cin = w
        self.head = nn.Conv2d(widths[0], cfg.in_chans, 1)

    @property
    def embed_dim(self) -> int:  # of the default readout: every stage and the bottleneck
        return (
            sum(self.cfg.base_width * 2**i for i in range(self.cfg.levels)) + self.cfg.base_width * 2**self.cfg.levels
        )

    def random_mask(self, imgs, mask_ratio, generator=None) -> torch.Tensor:
        """(N, L) with exactly round(mask_ratio * L) ones (hidden patches) per image."""
        p = self.cfg.patch_size
        N, _, H, W = imgs.shape
        L = (H // p) * (W // p)
        n_hide = int(round(mask_ratio * L))
        ranks = torch.argsort(torch.argsort(batch_uniform(N, L, imgs.device, generator), dim=1), dim=1)
        return (ranks < n_hide).float()

    def encode(self, x):
        skips = []
        for blk in self.down:
            x = blk(x)
            skips.append(x)
            x = self.pool(x)
        return self.bottleneck(x), skips

    def decode(self, x, skips):
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def forward(self, imgs, mask_ratio=None, generator=None):
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        p = self.cfg.patch_size
        N, C, H, W = imgs.shape
        mask = self.random_mask(imgs, ratio, generator)
        pixel_mask = mask.reshape(N, 1, H // p, W // p).repeat_interleave(p, 2).repeat_interleave(p, 3)
        z, skips = self.encode(imgs * (1 - pixel_mask))
        recon = self.decode(z, skips)
        pred = self.patchify(recon)
        return self.forward_loss(imgs, pred, mask), pred, mask

    def stages(self, imgs) -> list[torch.Tensor]:
        """The encoder's stages (shallow to deep) and, last, the bottleneck."""
        z, skips = self.encode(imgs)
        return [*skips, z]

    def embed(self, imgs, layer: int = -1, pooling: str = "concat"):
        if pooling == "flatten":
            raise ValueError("pooling 'flatten' is not defined for MU-Net (mean or concat)")
        return pool_stages(self.stages(imgs), layer, pooling)
