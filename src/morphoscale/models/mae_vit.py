"""Masked autoencoder with a ViT encoder (He et al. 2022; Kraus et al. 2023 for cell images).

Read it top to bottom like facebookresearch/mae's models_mae.py: random_masking,
forward_encoder, forward_decoder (patchify, unpatchify and forward_loss, which the masked
U-Net shares, are in masked.py). Differences that matter for microscopy:
position embeddings are computed for the crop's grid (any crop size), the mask hides
exactly round(mask_ratio * tokens) patches per image, and the loss adds an L1 term on
the Fourier magnitudes of the masked patches (losses.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import Block
from torch import nn

from .masked import MaskedReconstruction
from .noise import batch_uniform
from .pos_embed import sincos_2d
from .readout import pick_layer


@dataclass
class MAEConfig:
    """One config type for every ViT-MAE preset (and the channel-agnostic one)."""

    img_size: int = 64
    patch_size: int = 8
    in_chans: int = 6
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.75
    fourier_weight: float = 0.01
    norm_pix_loss: bool = False
    drop_path: float = 0.0
    channel_agnostic: bool = False


class MAEViT(MaskedReconstruction, nn.Module):
    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cfg = cfg
        p, C, D = cfg.patch_size, cfg.in_chans, cfg.embed_dim
        self.patch_embed = nn.Conv2d(C, D, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        dpr = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # stochastic depth, linearly deeper
        self.blocks = nn.ModuleList(
            [Block(D, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, drop_path=dpr[i]) for i in range(cfg.depth)]
        )
        self.norm = nn.LayerNorm(D, eps=1e-6)

        Dd = cfg.decoder_embed_dim
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_blocks = nn.ModuleList(
            [Block(Dd, cfg.decoder_num_heads, cfg.mlp_ratio, qkv_bias=True) for _ in range(cfg.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(Dd, eps=1e-6)
        self.decoder_pred = nn.Linear(Dd, p * p * C)
        self._pos_cache: dict = {}
        self.initialize_weights()

    def initialize_weights(self) -> None:
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # --- geometry ---------------------------------------------------------------------

    def pos_embed(self, dim: int, gh: int, gw: int, device) -> torch.Tensor:
        key = (dim, gh, gw, str(device))
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_2d(dim, gh, gw).to(device)[None]
        return self._pos_cache[key]

    def random_masking(self, x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None):
        """Keep a random subset of tokens per image: exactly L - round(mask_ratio * L) of them.

        Returns the kept tokens, the mask (1 = hidden) and the permutation that restores order.
        """
        N, L, D = x.shape
        len_keep = L - int(round(mask_ratio * L))
        noise = batch_uniform(N, L, x.device, generator)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, D))
        mask = torch.ones(N, L, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_kept, mask, ids_restore

    # --- encoder and decoder -----------------------------------------------------------

    def tokens(self, imgs: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.patch_embed(imgs)  # (N, D, gh, gw)
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        return x + self.pos_embed(x.shape[-1], gh, gw, x.device), (gh, gw)

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, generator=None, **token_kwargs):
        x, grid = self.tokens(imgs, **token_kwargs)
        x, mask, ids_restore = self.random_masking(x, mask_ratio, generator)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore, grid

    def decoder_positions(self, dim: int, grid: tuple[int, int], device) -> torch.Tensor:
        """(1, L, dim) added to the decoder's patch tokens: the 2-D sin-cos table."""
        return self.pos_embed(dim, *grid, device)

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int], **positions):
        """Visible tokens and mask tokens, unshuffled, with their positions, through the
        decoder: a prediction for every patch (`positions` go to `decoder_positions`)."""
        x = self.decoder_embed(x)
        N, L = ids_restore.shape
        mask_tokens = self.mask_token.expand(N, L + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], x_ + self.decoder_positions(x.shape[-1], grid, x.device, **positions)], dim=1)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None, generator=None):
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore, grid = self.forward_encoder(imgs, ratio, generator)
        pred = self.forward_decoder(latent, ids_restore, grid)
        losses = self.forward_loss(imgs, pred, mask)
        return losses, pred, mask

    # --- the Encoder interface ---------------------------------------------------------

    def encode_all(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Every token (cls first) through the encoder up to block `layer`; the last block's output is normalized."""
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        stop = pick_layer(len(self.blocks), layer)
        for blk in self.blocks[: stop + 1]:
            x = blk(x)
        return self.norm(x) if stop == len(self.blocks) - 1 else x

    def embed(self, imgs: torch.Tensor, layer: int = -1, pooling: str = "mean") -> torch.Tensor:
        """(N, C, H, W) standardized crops -> (N, D): all tokens, no masking.

        layer: which block's output (-1 = last, normalized); pooling: mean of patch tokens or cls.
        """
        x = self.encode_all(self.tokens(imgs)[0], layer)
        if pooling == "mean":
            return x[:, 1:].mean(dim=1)
        if pooling == "cls":
            return x[:, 0]
        raise ValueError(f"pooling '{pooling}' is not defined for this model (mean or cls)")

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim
