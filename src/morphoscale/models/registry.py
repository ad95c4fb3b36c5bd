"""Named presets, timm-style: each preset is one registered function returning its config,
with a declared record of what the model is (`PresetInfo`); `create_model(name, channels)`
only looks the name up. `PRESETS` maps every name to its config."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from ..errors import ConfigError
from .autoencoder import ConvAutoencoder
from .backbones import has_batchnorm
from .byol import BYOL
from .ca_mae import CAMAEViT
from .mae_vit import MAEConfig, MAEViT
from .mu_net import MaskedUNet, UNetConfig
from .paradigm import BaselineConfig
from .wsl import WeaklySupervisedClassifier


@dataclass(frozen=True)
class PresetInfo:
    """What a preset is, declared where it is defined (not guessed from its name or its class)."""

    family: str  # mae, ca_mae, mu_net, wsl, ae, rae, byol
    input_size: int  # the crop it is trained on and embeds (a U-Net takes any size; this is its default)
    multi_view: bool = False  # learns from two views of a site (BYOL)
    per_batch_norm: bool = False  # BatchNorm statistics per experimental batch (AdaBN)
    channel_agnostic: bool = False  # one token set per channel, any subset of its channels
    default_readout: str = "mean"  # the pooling `embed` uses unless told
    reconstructs: bool = False  # a masked model: previews show masked input | reconstruction | target


_REGISTRY: dict[str, tuple[Callable[[], MAEConfig | UNetConfig | BaselineConfig], PresetInfo]] = {}


def register_preset(family: str, input_size: int, **info):
    """Register the decorated function (its name is the preset's) with its declared record."""

    def add(fn):
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"preset {fn.__name__} registered twice")
        _REGISTRY[fn.__name__] = (fn, PresetInfo(family, input_size, **info))
        return fn

    return add


def preset_info(name: str) -> PresetInfo:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model preset '{name}'; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name][1]


# --- masked autoencoders (Kraus et al. 2023): ViT sizes as timm names them ----------------

_VIT = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}


def _vit(size: str, patch: int, img: int, cpu: bool = False, channel_agnostic: bool = False) -> MAEConfig:
    d, depth, heads = _VIT[size]
    if cpu:  # a decoder a laptop can train
        dec = dict(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
    elif channel_agnostic:  # many more tokens: the paper's CA models use a lighter decoder
        dec = dict(decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8)
    else:
        dec = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)
    return MAEConfig(
        img_size=img,
        patch_size=patch,
        embed_dim=d,
        depth=depth,
        num_heads=heads,
        channel_agnostic=channel_agnostic,
        **dec,
    )


def _mae(img: int):
    return register_preset("mae", img, reconstructs=True)


def _ca_mae(img: int):
    return register_preset("ca_mae", img, channel_agnostic=True, reconstructs=True)


@_mae(64)
def mae_vit_tiny_patch8_64():
    return _vit("tiny", 8, 64, cpu=True)


@_mae(128)
def mae_vit_tiny_patch16_128():
    return _vit("tiny", 16, 128, cpu=True)


@_mae(256)
def mae_vit_small_patch16_256():
    return _vit("small", 16, 256)


@_mae(256)
def mae_vit_base_patch16_256():
    return _vit("base", 16, 256)


@_mae(256)
def mae_vit_base_patch8_256():
    return _vit("base", 8, 256)


@_mae(256)
def mae_vit_large_patch16_256():
    return _vit("large", 16, 256)


@_mae(256)
def mae_vit_large_patch8_256():
    return _vit("large", 8, 256)


# channel-agnostic MAEs (the paper's CA-MAE): every channel its own tokens
@_ca_mae(64)
def ca_mae_vit_tiny_patch8_64():
    return _vit("tiny", 8, 64, cpu=True, channel_agnostic=True)


@_ca_mae(128)
def ca_mae_vit_tiny_patch16_128():
    return _vit("tiny", 16, 128, cpu=True, channel_agnostic=True)


@_ca_mae(256)
def ca_mae_vit_small_patch16_256():
    return _vit("small", 16, 256, channel_agnostic=True)


@_ca_mae(256)
def ca_mae_vit_base_patch16_256():
    return _vit("base", 16, 256, channel_agnostic=True)


@_ca_mae(256)
def ca_mae_vit_base_patch8_256():
    return _vit("base", 8, 256, channel_agnostic=True)


@_ca_mae(256)
def ca_mae_vit_large_patch16_256():
    return _vit("large", 16, 256, channel_agnostic=True)


@_ca_mae(256)
def ca_mae_vit_large_patch8_256():
    return _vit("large", 8, 256, channel_agnostic=True)


# --- masked U-Nets (Dmitrenko et al. 2022): fully convolutional, read by concatenated stages -----


def _mu_net():
    return register_preset("mu_net", 64, default_readout="concat", reconstructs=True)


@_mu_net()
def mu_net_small():
    return UNetConfig(base_width=16, levels=3)


@_mu_net()
def mu_net_medium():
    return UNetConfig(base_width=32, levels=4)


@_mu_net()
def mu_net_large():
    return UNetConfig(base_width=64, levels=4)


# --- the baselines (models/paradigm.py): <paradigm>_<backbone>_<crop size> ---------------------
# CNN backbones are read by their concatenated stages, ViT backbones by their mean token.


def _baseline(paradigm: str, backbone: str, img: int, **cfg) -> BaselineConfig:
    return BaselineConfig(paradigm=paradigm, backbone=backbone, img_size=img, **cfg)


def _wsl(img: int, readout: str = "concat", **info):
    return register_preset("wsl", img, default_readout=readout, **info)


def _byol(img: int, readout: str = "concat"):
    return register_preset("byol", img, multi_view=True, default_readout=readout)


@_wsl(64)
def wsl_midl_cnn_64():
    return _baseline("wsl", "midl_cnn", 64)


@_wsl(64)
def wsl_resnet18_64():
    return _baseline("wsl", "resnet18", 64)


@_wsl(64, per_batch_norm=True)
def wsl_resnet18_64_adabn():
    return _baseline("wsl", "resnet18", 64, adabn=True)


@_wsl(128)
def wsl_resnet50_128():
    return _baseline("wsl", "resnet50", 128)


@_wsl(128)
def wsl_densenet121_128():
    return _baseline("wsl", "densenet121", 128)


@_wsl(256)
def wsl_densenet161_256():
    return _baseline("wsl", "densenet161", 256)


@_wsl(64, "mean")
def wsl_vit_tiny_patch8_64():
    return _baseline("wsl", "vit_tiny_patch8", 64)


@_wsl(256, "mean")
def wsl_vit_small_patch16_256():
    return _baseline("wsl", "vit_small_patch16", 256)


@register_preset("ae", 64, default_readout="concat")
def ae_midl_cnn_64():
    return _baseline("ae", "midl_cnn", 64)


@register_preset("ae", 64, default_readout="concat")
def ae_midl_cnn_wide_64():
    return _baseline("ae", "midl_cnn", 64, width=4.0)


@register_preset("rae", 64, default_readout="concat")
def rae_midl_cnn_64():
    return _baseline("rae", "midl_cnn", 64)


@_byol(64)
def byol_midl_cnn_64():
    return _baseline("byol", "midl_cnn", 64)


@_byol(64)
def byol_resnet18_64():
    return _baseline("byol", "resnet18", 64)


@_byol(128)
def byol_resnet50_128():
    return _baseline("byol", "resnet50", 128)


@_byol(64, "mean")
def byol_vit_tiny_patch8_64():
    return _baseline("byol", "vit_tiny_patch8", 64)


@_byol(256, "mean")
def byol_vit_small_patch16_256():
    return _baseline("byol", "vit_small_patch16", 256)


PRESETS: dict[str, MAEConfig | UNetConfig | BaselineConfig] = {name: fn() for name, (fn, _) in _REGISTRY.items()}
_MODELS = {"wsl": WeaklySupervisedClassifier, "ae": ConvAutoencoder, "rae": ConvAutoencoder, "byol": BYOL}


def create_model(name: str, channels: list[str], n_classes: int = 0, **overrides):
    """A model of preset `name` for images with these named channels; overrides are config
    fields; n_classes: perturbation classes, for the models that learn from labels."""
    preset_info(name)  # an unknown name is one line
    cfg = _REGISTRY[name][0]()
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
    for dim, heads, key in (
        (cfg.embed_dim, cfg.num_heads, "num_heads"),
        (cfg.decoder_embed_dim, cfg.decoder_num_heads, "decoder_num_heads"),
    ):
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
