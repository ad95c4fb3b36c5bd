"""Encoders others released, built from timm and loaded from a local file: OpenPhenom (the
channel-agnostic MAE ViT-S/16 of recursionpharma/maes_microscopy) and any timm ViT.

OpenPhenom's encoder, as its code defines it (../shared/notes/openphenom.md): a timm
VisionTransformer with ParallelScalingBlock blocks (attention and MLP in parallel from one
pre-norm, QK-norm, no QKV bias, LayerScale), one 16 px patch projection shared by every channel
(tokens channel-major: all of channel 0's patches, then channel 1's ...), fixed 2-D sin-cos
position embeddings repeated for each channel (no channel embedding: the embedding does not
depend on the channels' order), a cls token with a zero position. With global_pool 'avg' timm
moves the final norm after pooling, so the tokens its `predict` averages are the last block's,
un-normalized; the embedding is their mean over every patch token of every channel (or each
channel's mean, concatenated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import why
from .readout import pick_layer, pool_channel_tokens


def phenom_sincos(dim: int, grid: int, scale: float = 10000.0) -> torch.Tensor:
    """OpenPhenom's 2-D sin-cos table for a grid x grid patch layout, (grid*grid, dim):
    [sin(h w_k), cos(h w_k), sin(x w_k), cos(x w_k)] with w_k = scale^(-k / (dim/4))."""
    pos = torch.arange(grid, dtype=torch.float32)
    hh, ww = torch.meshgrid(pos, pos, indexing="ij")
    quarter = dim // 4
    w = 1.0 / scale ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    h, x = torch.outer(hh.flatten(), w), torch.outer(ww.flatten(), w)
    return torch.cat([torch.sin(h), torch.cos(h), torch.sin(x), torch.cos(x)], dim=1)


@dataclass
class PhenomConfig:
    img_size: int = 256
    patch_size: int = 16
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    max_in_chans: int = 11
    channel_agnostic: bool = True
    adabn: bool = False


class PhenomEncoder(nn.Module):
    """OpenPhenom's encoder with morphoscale's Encoder interface (embed, channel_names, preset)."""

    preset = "openphenom_vit_small_patch16_256"
    default_pooling = "mean"

    def __init__(self, cfg: PhenomConfig, channel_names: list[str]):
        from timm.models.vision_transformer import ParallelScalingBlock, VisionTransformer

        super().__init__()
        self.cfg = cfg
        self.channel_names = list(channel_names)
        self.vit = VisionTransformer(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            in_chans=1,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            num_classes=0,
            global_pool="avg",
            fc_norm=None,
            class_token=True,
            pos_embed="none",
            block_fn=ParallelScalingBlock,
            qkv_bias=False,
            qk_norm=True,
            init_values=1e-4,
        )

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def tokens(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) self-standardized crops -> (N, 1 + C*L, D): cls, then each channel's patches."""
        N, C, H, W = imgs.shape
        if C > self.cfg.max_in_chans:
            raise ValueError(f"{C} channels; the model takes at most {self.cfg.max_in_chans}")
        x = self.vit.patch_embed.proj(imgs.reshape(N * C, 1, H, W))  # one projection for every channel
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2).reshape(N, C * gh * gw, -1)
        pos = self._positions(gh, gw, x.device).repeat(C, 1)
        x = x + pos[None]
        return torch.cat([self.vit.cls_token.expand(N, -1, -1), x], dim=1)  # the cls token's position is zero

    def _positions(self, gh: int, gw: int, device) -> torch.Tensor:
        if gh != gw:
            raise ValueError(f"OpenPhenom's positions are for square crops; got a {gh} x {gw} patch grid")
        return phenom_sincos(self.cfg.embed_dim, gh).to(device)

    def encode_all(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        stop = pick_layer(len(self.vit.blocks), layer)
        for blk in self.vit.blocks[: stop + 1]:
            x = blk(x)
        return self.vit.norm(x)  # Identity under global_pool 'avg', as in the reference's forward_features

    def embed(self, imgs: torch.Tensor, layer: int = -1, pooling: str = "mean", channel_ids=None) -> torch.Tensor:
        return pool_channel_tokens(self.encode_all(self.tokens(imgs), layer), imgs.shape[1], pooling)


@dataclass
class TimmConfig:
    img_size: int
    channel_agnostic: bool = False
    adabn: bool = False


class TimmViTEncoder(nn.Module):
    """A timm ViT (any `timm.create_model` name) with the Encoder interface: mean of the patch
    tokens (after the final norm, as timm's forward_features returns them) or the cls token."""

    default_pooling = "mean"

    def __init__(self, arch: str, channel_names: list[str], img_size: int | None = None):
        import timm

        super().__init__()
        kwargs = {"pretrained": False, "num_classes": 0, "in_chans": len(channel_names)}
        if img_size:
            kwargs["img_size"] = img_size
        try:
            self.net = timm.create_model(arch, **kwargs)
        except Exception as e:
            raise ValueError(f"--arch {arch}: timm cannot build it ({why(e)})") from None
        self.preset = f"timm:{arch}"
        self.channel_names = list(channel_names)
        self.cfg = TimmConfig(img_size=int(self.net.patch_embed.img_size[0]))

    def embed(self, imgs: torch.Tensor, layer: int = -1, pooling: str = "mean", channel_ids=None) -> torch.Tensor:
        n = len(self.net.blocks)
        stop = pick_layer(n, layer)
        x = self.net.forward_intermediates(
            imgs,
            indices=[stop],
            norm=stop == n - 1,
            output_fmt="NLC",
            intermediates_only=True,
            return_prefix_tokens=True,
        )[0]
        patches, prefix = x if isinstance(x, tuple) else (x, None)
        if pooling == "mean":
            return patches.mean(dim=1)
        if pooling == "cls" and prefix is not None and prefix.shape[1]:
            return prefix[:, 0]
        raise ValueError(
            f"pooling '{pooling}' is not defined for this model (mean{', cls' if prefix is not None else ''})"
        )
