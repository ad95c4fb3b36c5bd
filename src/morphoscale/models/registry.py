"""Named presets, timm-style: `create_model("mae_vit_small_patch16_256", channels)`."""

from __future__ import annotations

from dataclasses import replace

from ..errors import ConfigError
from .ca_mae import CAMAEViT
from .mae_vit import MAEConfig, MAEViT
from .autoencoder import ConvAutoencoder
from .backbones import has_batchnorm
from .byol import BYOL
from .mu_net import MaskedUNet, UNetConfig
from .paradigm import BaselineConfig
from .wsl import WeaklySupervisedClassifier

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


PRESETS: dict[str, MAEConfig | UNetConfig | BaselineConfig] = {
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

# The baselines (models/paradigm.py): <paradigm>_<backbone>_<crop size>.
_BASELINES = {
    "wsl": [("midl_cnn", 64), ("resnet18", 64), ("resnet50", 128), ("densenet121", 128), ("densenet161", 256),
            ("vit_tiny_patch8", 64), ("vit_small_patch16", 256)],
    "ae": [("midl_cnn", 64)],
    "rae": [("midl_cnn", 64)],
    "byol": [("midl_cnn", 64), ("resnet18", 64), ("resnet50", 128), ("vit_tiny_patch8", 64), ("vit_small_patch16", 256)],
}
for _paradigm, _backbones in _BASELINES.items():
    for _bb, _img in _backbones:
        PRESETS[f"{_paradigm}_{_bb}_{_img}"] = BaselineConfig(paradigm=_paradigm, backbone=_bb, img_size=_img)
PRESETS["ae_midl_cnn_wide_64"] = replace(PRESETS["ae_midl_cnn_64"], width=4.0)
PRESETS["wsl_resnet18_64_adabn"] = replace(PRESETS["wsl_resnet18_64"], adabn=True)
_MODELS = {"wsl": WeaklySupervisedClassifier, "ae": ConvAutoencoder, "rae": ConvAutoencoder, "byol": BYOL}


def create_model(name: str, channels: list[str], n_classes: int = 0, **overrides):
    """A model of preset `name` for images with these named channels; overrides are config
    fields; n_classes: perturbation classes, for the models that learn from labels."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset '{name}'; known: {', '.join(sorted(PRESETS))}")
    cfg = PRESETS[name]
    unknown = [k for k in overrides if not hasattr(cfg, k)]
    if unknown:
        raise ConfigError(f"key 'model.{unknown[0]}': unknown field of preset {name}")
    cfg = replace(cfg, in_chans=len(channels), **overrides)
    if isinstance(cfg, BaselineConfig):
        if cfg.paradigm not in _MODELS:
            raise ConfigError(f"key 'model.paradigm': unknown paradigm '{cfg.paradigm}'; known: {', '.join(_MODELS)}")
        if cfg.ema_schedule not in ("constant", "cosine"):
            raise ConfigError(f"key 'model.ema_schedule': '{cfg.ema_schedule}' is not constant or cosine")
        if not 0 <= cfg.ema_decay <= 1:
            raise ConfigError(f"key 'model.ema_decay': {cfg.ema_decay} is not in [0, 1]")
        cfg = replace(cfg, n_classes=n_classes)
        try:
            model = _MODELS[cfg.paradigm](cfg)
        except ValueError as e:
            raise ConfigError(f"model {name}: {e}") from None
        if cfg.adabn and not has_batchnorm(model.encoder):
            raise ConfigError(f"key 'model.adabn': backbone {cfg.backbone} has no BatchNorm to adapt")
    elif isinstance(cfg, UNetConfig):
        model = MaskedUNet(cfg)
    elif (problem := _vit_config_problem(cfg)) is not None:
        raise ConfigError(f"model {name}: {problem}")
    elif cfg.channel_agnostic:
        model = CAMAEViT(cfg, channels)
    else:
        model = MAEViT(cfg)
    model.preset = name
    model.channel_names = list(channels)
    return model


def _vit_config_problem(cfg: MAEConfig) -> str | None:
    """What makes a ViT MAE config impossible, named by its key (None: nothing)."""
    if not 0 < cfg.mask_ratio < 1:
        return f"key 'model.mask_ratio': {cfg.mask_ratio} must be between 0 and 1 (exclusive)"
    if cfg.img_size % cfg.patch_size:
        return f"key 'model.patch_size': {cfg.patch_size} px patches do not tile a {cfg.img_size} px image"
    for dim, heads, key in ((cfg.embed_dim, cfg.num_heads, "num_heads"), (cfg.decoder_embed_dim, cfg.decoder_num_heads, "decoder_num_heads")):
        if heads < 1 or dim % heads:
            return f"key 'model.{key}': {heads} heads do not divide a width of {dim}"
    if cfg.depth < 1:
        return f"key 'model.depth': {cfg.depth} blocks; at least 1"
    return None


def encoder_parameters(model) -> int:
    """Parameters of the encoder alone (what ViT sizes count): no decoder, no mask token, no head."""
    if isinstance(getattr(model, "cfg", None), BaselineConfig):
        return sum(p.numel() for p in model.encoder.parameters())
    skip = ("decoder", "mask_token", "up.", "dec.", "head.")
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(skip))
