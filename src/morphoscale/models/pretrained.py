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

timm changed ParallelScalingBlock's bias at 1.0.25 (timm issue #2653): up to 1.0.24 the
fused input projection's bias was [zeros for q, k, v, then mlp_bias] while its output is split
[mlp, q, k, v], so `mlp_bias` landed on the last units of the MLP and on q, k and v. OpenPhenom
was trained and is served that way; the pinned timm adds `mlp_bias` to the MLP units only.
`LegacyParallelScalingBlock` is the block the weights expect ("legacy"), the pinned timm's own
is "fixed"; a state dict cannot tell which era it comes from, so `embed --mlp-bias` can choose.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import ParallelScalingBlock
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


MLP_BIAS = ("legacy", "fixed")


class LegacyParallelScalingBlock(ParallelScalingBlock):
    """ParallelScalingBlock as timm 1.0.11 computed it (the parameters are the pinned timm's,
    the same names and shapes; the forward is the old one, for inference)."""

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("the legacy OpenPhenom block takes no attention mask")
        B, N, C = x.shape
        y = self.in_norm(x)
        if self.mlp_bias is not None:  # the old routing: [0 (q, k, v), mlp_bias] over [mlp, q, k, v]
            y = F.linear(y, self.in_proj.weight, torch.cat((self.mlp_bias.new_zeros(3 * C), self.mlp_bias)))
        else:
            y = self.in_proj(y)
        x_mlp, q, k, v = torch.split(y, self.in_split, dim=-1)
        q = self.q_norm(q.view(B, N, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(k.view(B, N, self.num_heads, self.head_dim)).transpose(1, 2)
        v = v.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        x_attn = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        x_attn = self.attn_out_proj(x_attn.transpose(1, 2).reshape(B, N, C))
        x_mlp = self.mlp_out_proj(self.mlp_drop(self.mlp_act(x_mlp)))
        return x + self.drop_path(self.ls(x_attn + x_mlp))


def use_mlp_bias(vit: nn.Module, mlp_bias: str) -> int:
    """Give every ParallelScalingBlock of `vit` the legacy or the fixed routing (the same
    parameters either way); returns how many blocks are parallel ones."""
    if mlp_bias not in MLP_BIAS:
        raise ValueError(f"mlp_bias '{mlp_bias}' is not one of {', '.join(MLP_BIAS)}")
    blocks = [b for b in vit.modules() if isinstance(b, ParallelScalingBlock)]
    for b in blocks:
        if mlp_bias == "legacy" and b.out_proj is not None:
            raise ValueError("a ParallelScalingBlock with a fused output projection has no legacy form")
        b.__class__ = LegacyParallelScalingBlock if mlp_bias == "legacy" else ParallelScalingBlock
    return len(blocks)


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
    mlp_bias: str = "legacy"  # the routing OpenPhenom was trained under (module docstring)


class PhenomEncoder(nn.Module):
    """OpenPhenom's encoder with morphoscale's Encoder interface (embed, channel_names, preset)."""

    preset = "openphenom_vit_small_patch16_256"
    default_pooling = "mean"

    def __init__(self, cfg: PhenomConfig, channel_names: list[str]):
        from timm.models.vision_transformer import VisionTransformer

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
        use_mlp_bias(self.vit, cfg.mlp_bias)

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
    mlp_bias: str = "fixed"  # ParallelScalingBlock's routing, where the architecture has that block


class TimmViTEncoder(nn.Module):
    """A timm ViT (any `timm.create_model` name) with the Encoder interface: mean of the patch
    tokens (after the final norm, as timm's forward_features returns them) or the cls token."""

    default_pooling = "mean"

    def __init__(self, arch: str, channel_names: list[str], img_size: int | None = None, mlp_bias: str = "fixed"):
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
        self.cfg = TimmConfig(img_size=int(self.net.patch_embed.img_size[0]), mlp_bias=mlp_bias)
        if not use_mlp_bias(self.net, mlp_bias) and mlp_bias == "legacy":
            raise ValueError(f"--mlp-bias legacy: {arch} has no ParallelScalingBlock, whose bias it routes")

    def timm_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The mean and std timm's pretrained config gives this architecture (its default tag,
        or the tag in the name), in pixels / full scale."""
        from timm.data import resolve_model_data_config

        cfg = resolve_model_data_config(self.net)
        return tuple(cfg["mean"]), tuple(cfg["std"])

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
