"""Channel-agnostic MAE (Kraus et al. 2023): one patch embedding shared by every channel,
a token per (channel, patch) with a learned embedding of the channel's name, so the model
trains and embeds with any subset and order of the channels it knows."""

from __future__ import annotations

import torch
from torch import nn

from .losses import mae_loss
from .mae_vit import MAEConfig, MAEViT
from .readout import pool_channel_tokens


class CAMAEViT(MAEViT):
    def __init__(self, cfg: MAEConfig, channel_names: list[str]):
        super().__init__(cfg)
        self.channel_names = list(channel_names)
        p, D, Dd = cfg.patch_size, cfg.embed_dim, cfg.decoder_embed_dim
        self.patch_embed = nn.Conv2d(1, D, kernel_size=p, stride=p)
        self.channel_embed = nn.Embedding(len(self.channel_names), D)
        self.decoder_channel_embed = nn.Embedding(len(self.channel_names), Dd)
        self.decoder_pred = nn.Linear(Dd, p * p)
        nn.init.normal_(self.channel_embed.weight, std=0.02)
        nn.init.normal_(self.decoder_channel_embed.weight, std=0.02)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        self._init_weights(self.decoder_pred)

    def channel_ids(self, names: list[str], device=None) -> torch.Tensor:
        unknown = [n for n in names if n not in self.channel_names]
        if unknown:
            raise ValueError(
                f"channel(s) {', '.join(unknown)} unknown to the model (it knows {', '.join(self.channel_names)})"
            )
        return torch.tensor([self.channel_names.index(n) for n in names], device=device)

    def _ids(self, imgs, channel_ids):
        if channel_ids is None:
            if imgs.shape[1] != len(self.channel_names):
                raise ValueError(
                    f"{imgs.shape[1]} channels given without names; the model knows {len(self.channel_names)}"
                )
            channel_ids = torch.arange(imgs.shape[1])
        return channel_ids.to(imgs.device)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C*L, p*p): channel-major tokens, each one channel's patch."""
        p = self.cfg.patch_size
        N, C, H, W = imgs.shape
        x = imgs.reshape(N * C, 1, H // p, p, W // p, p)
        x = torch.einsum("nchpwq->nhwpqc", x).reshape(N, C * (H // p) * (W // p), p * p)
        return x

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int], n_channels: int | None = None) -> torch.Tensor:
        p = self.cfg.patch_size
        gh, gw = grid
        C = n_channels or x.shape[1] // (gh * gw)
        x = x.reshape(x.shape[0] * C, gh, gw, p, p, 1)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(-1, C, gh * p, gw * p)

    def tokens(self, imgs: torch.Tensor, channel_ids: torch.Tensor | None = None):
        ids = self._ids(imgs, channel_ids)
        N, C, H, W = imgs.shape
        x = self.patch_embed(imgs.reshape(N * C, 1, H, W))  # shared over channels
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2).reshape(N, C, gh * gw, -1)
        x = x + self.pos_embed(x.shape[-1], gh, gw, x.device)[:, None] + self.channel_embed(ids)[None, :, None]
        return x.reshape(N, C * gh * gw, -1), (gh, gw)

    def decoder_positions(self, dim, grid, device, channel_ids=None, n_channels: int = 1):
        """Each channel's patches: the shared 2-D position plus the channel's decoder embedding."""
        pos = self.pos_embed(dim, *grid, device)[:, None] + self.decoder_channel_embed(channel_ids)[None, :, None]
        return pos.reshape(1, n_channels * grid[0] * grid[1], -1)

    def forward_loss(self, imgs, pred, mask):
        return mae_loss(
            pred, self.patchify(imgs), mask, self.cfg.patch_size, 1, self.cfg.fourier_weight, self.cfg.norm_pix_loss
        )

    def forward(self, imgs, mask_ratio=None, generator=None, channel_ids=None):
        ids = self._ids(imgs, channel_ids)
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore, grid = self.forward_encoder(imgs, ratio, generator, channel_ids=ids)
        pred = self.forward_decoder(latent, ids_restore, grid, channel_ids=ids, n_channels=imgs.shape[1])
        return self.forward_loss(imgs, pred, mask), pred, mask

    def embed(self, imgs, layer: int = -1, pooling: str = "mean", channel_ids=None) -> torch.Tensor:
        """mean / cls as for MAE-ViT; per_channel concatenates each channel's mean token (C * D)."""
        return pool_channel_tokens(self.encode_all(self.tokens(imgs, channel_ids)[0], layer), imgs.shape[1], pooling)
