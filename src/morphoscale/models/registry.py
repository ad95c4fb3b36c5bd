"""Named presets, timm-style: `create_model("mae_vit_small_patch16_256", channels)`."""

from __future__ import annotations

from dataclasses import replace

from ..errors import ConfigError
from .ca_mae import CAMAEViT
from .mae_vit import MAEConfig, MAEViT
from .mu_net import MaskedUNet, UNetConfig

_VIT = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}


def _vit(size: str, patch: int, img: int, cpu: bool = False, channel_agnostic: bool = False) -> MAEConfig:
    d, depth, heads = _VIT[size]
    if cpu:  # a decoder a laptop can train
        dec = dict(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
    elif channel_agnostic:  # many more tokens: the paper's CA models use a lighter decoder
        dec = dict(decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8)
    else:
        dec = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)
    return MAEConfig(img_size=img, patch_size=patch, embed_dim=d, depth=depth, num_heads=heads, channel_agnostic=channel_agnostic, **dec)


PRESETS: dict[str, MAEConfig | UNetConfig] = {
    "mae_vit_tiny_patch8_64": _vit("tiny", 8, 64, cpu=True),
    "mae_vit_tiny_patch16_128": _vit("tiny", 16, 128, cpu=True),
    "mae_vit_small_patch16_256": _vit("small", 16, 256),
    "mae_vit_base_patch16_256": _vit("base", 16, 256),
    "mae_vit_base_patch8_256": _vit("base", 8, 256),
    "mae_vit_large_patch16_256": _vit("large", 16, 256),
    "mae_vit_large_patch8_256": _vit("large", 8, 256),
    "mu_net_small": UNetConfig(base_width=16, levels=3),
    "mu_net_medium": UNetConfig(base_width=32, levels=4),
    "mu_net_large": UNetConfig(base_width=64, levels=4),
}
for _name in [n for n in PRESETS if n.startswith("mae_vit_")]:
    _size, _patch, _img = _name.split("_")[2], int(_name.split("_")[3][5:]), int(_name.split("_")[4])
    PRESETS["ca_" + _name] = _vit(_size, _patch, _img, cpu="tiny" in _name, channel_agnostic=True)


def create_model(name: str, channels: list[str], **overrides):
    """A model of preset `name` for images with these named channels; overrides are config fields."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset '{name}'; known: {', '.join(sorted(PRESETS))}")
    cfg = PRESETS[name]
    unknown = [k for k in overrides if not hasattr(cfg, k)]
    if unknown:
        raise ConfigError(f"key 'model.{unknown[0]}': unknown field of preset {name}")
    cfg = replace(cfg, in_chans=len(channels), **overrides)
    if isinstance(cfg, UNetConfig):
        model = MaskedUNet(cfg)
    elif cfg.channel_agnostic:
        model = CAMAEViT(cfg, channels)
    else:
        model = MAEViT(cfg)
    model.preset = name
    model.channel_names = list(channels)
    return model


def encoder_parameters(model) -> int:
    """Parameters of the encoder alone (what ViT sizes count): no decoder, no mask token."""
    skip = ("decoder", "mask_token", "up.", "dec.", "head.")
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(skip))
