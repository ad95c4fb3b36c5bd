"""Pretrained weights from a local file (`embed --weights FILE`): OpenPhenom / maes_microscopy's
layout, a timm ViT's, or a morphoscale training checkpoint (train/checkpoint.py loads those); safetensors or torch files whatever
the extension (OpenPhenom's `model.safetensors` is a torch pickle of {"state_dict": ...}).

Nothing is downloaded. A file that does not fit is one line naming the first key that does not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..errors import InputError, why

LAYOUTS = ("auto", "openphenom", "timm", "morphoscale")
PHENOM_PREFIX = "encoder.vit_backbone."


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors by name, how the file was read); a one-line error saying what was tried."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    tried = []
    try:
        from safetensors.torch import load_file

        return dict(load_file(str(path))), "safetensors"
    except Exception as e:
        tried.append(f"safetensors ({type(e).__name__})")
    try:
        with open(
            path, "rb"
        ) as f:  # a file object: torch reads a '.safetensors' name as safetensors, OpenPhenom's is a pickle
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        tried.append(f"torch.load ({why(e, 120)})")
        raise InputError(f"{path}: cannot read weights; tried {' and '.join(tried)}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return dict(obj[key]), f"torch ({key})"
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), "torch"
    raise InputError(f"{path}: a torch file but not a state dict (no 'state_dict' or 'model' of tensors)")


def detect_layout(sd: dict, path: Path) -> str:
    keys = list(sd)
    if any(k.startswith(PHENOM_PREFIX) for k in keys):
        return "openphenom"
    if any(k.startswith("model.") for k in keys):
        return "morphoscale"
    if "patch_embed.proj.weight" in sd and any(k.startswith("blocks.0.") for k in keys):
        return "timm"
    raise InputError(
        f"{path}: weights of no known layout (first key '{keys[0] if keys else ''}'); give --weights-layout openphenom, timm or morphoscale"
    )


def foreign_encoder(sd: dict, path: Path, channels: list[str], layout: str, arch: str | None = None):
    """The encoder an OpenPhenom or timm state dict defines, for these channel names (a
    morphoscale checkpoint is read by train/checkpoint.py, which knows the training module)."""
    return _openphenom(sd, path, channels) if layout == "openphenom" else _timm(sd, path, channels, arch)


def _max_in_chans(path: Path) -> int:
    """The config.json beside the weights says how many channels its position table covers; else
    the released model's 11."""
    cfg = path.parent / "config.json"
    if cfg.is_file():
        try:
            return int(json.loads(cfg.read_text())["encoder"]["max_in_chans"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            pass
    return 11


def _openphenom(sd: dict, path: Path, channels: list[str]):
    from .pretrained import PhenomConfig, PhenomEncoder, phenom_sincos

    enc = {k[len(PHENOM_PREFIX) :]: v for k, v in sd.items() if k.startswith(PHENOM_PREFIX)}
    for need in ("cls_token", "patch_embed.proj.weight", "pos_embed"):
        if need not in enc:
            raise InputError(f"{path}: OpenPhenom layout without '{PHENOM_PREFIX}{need}'")
    D, _, p, _ = enc["patch_embed.proj.weight"].shape
    depth = 1 + max(int(k.split(".")[1]) for k in enc if k.startswith("blocks."))
    n_pos = enc["pos_embed"].shape[1]
    m = _max_in_chans(path)
    grid = math.isqrt((n_pos - 1) // m)
    if grid * grid * m + 1 != n_pos:
        raise InputError(
            f"{path}: {PHENOM_PREFIX}pos_embed has {n_pos} rows, not 1 + channels x grid^2 for {m} channels"
        )
    cfg = PhenomConfig(
        img_size=grid * p, patch_size=p, embed_dim=D, depth=depth, num_heads=max(D // 64, 1), max_in_chans=m
    )
    if len(channels) > m:
        raise InputError(f"{path}: the model takes at most {m} channels; {len(channels)} given (--channels to choose)")
    model = PhenomEncoder(cfg, channels)
    expected = torch.cat([torch.zeros(1, D), phenom_sincos(D, grid).repeat(m, 1)])[None]
    if not torch.allclose(enc["pos_embed"].float(), expected, atol=1e-4):
        raise InputError(
            f"{path}: {PHENOM_PREFIX}pos_embed is not OpenPhenom's fixed sin-cos table; these are not its weights"
        )
    enc.pop("pos_embed")
    _load_strict(model.vit, enc, path, PHENOM_PREFIX)
    return model


def _timm(sd: dict, path: Path, channels: list[str], arch: str | None):
    from .pretrained import TimmViTEncoder

    if not arch:
        raise InputError(f"{path}: a timm checkpoint; name its architecture with --arch (e.g. vit_small_patch16_224)")
    c = sd["patch_embed.proj.weight"].shape[1]
    if c != len(channels):
        raise InputError(
            f"{path}: patch_embed.proj.weight takes {c} channels; {len(channels)} given (--channels to choose {c})"
        )
    pos = sd.get("pos_embed")
    img = None
    if pos is not None:
        p = sd["patch_embed.proj.weight"].shape[-1]
        prefix = sum(1 for k in ("cls_token", "reg_token") if k in sd)
        grid = math.isqrt(pos.shape[1] - prefix)
        img = grid * p if grid * grid == pos.shape[1] - prefix else None
    try:
        model = TimmViTEncoder(arch, channels, img)
    except ValueError as e:
        raise InputError(str(e)) from None
    _load_strict(model.net, {k: v for k, v in sd.items() if not k.startswith("head.")}, path, "")
    return model


def _load_strict(module: torch.nn.Module, sd: dict, path: Path, prefix: str) -> None:
    """Every parameter of the module from `sd`, shapes equal; the first key that does not fit is the error."""
    own = module.state_dict()
    for k, v in own.items():
        if k not in sd:
            raise InputError(f"{path}: no '{prefix}{k}' (the model needs it, shape {tuple(v.shape)})")
        if tuple(sd[k].shape) != tuple(v.shape):
            raise InputError(f"{path}: '{prefix}{k}' has shape {tuple(sd[k].shape)}, the model's is {tuple(v.shape)}")
    extra = [k for k in sd if k not in own]
    if extra:
        raise InputError(f"{path}: '{prefix}{extra[0]}' fits no parameter of the model ({len(extra)} such keys)")
    module.load_state_dict({k: sd[k].to(own[k].dtype) for k in own}, strict=True)


def initialize_from(model: torch.nn.Module, path: Path) -> None:
    """Training's starting weights (train key `weights`): a morphoscale checkpoint of the same
    preset, every parameter of the model from it. OpenPhenom's and timm's encoders have other
    blocks than our presets, so their weights embed (`embed --weights`) but do not start training."""
    from ..errors import ConfigError

    sd, _ = read_state_dict(path)
    layout = detect_layout(sd, path)
    if layout != "morphoscale":
        raise ConfigError(
            f"key 'weights': {path} holds {layout} weights; training starts only from a morphoscale checkpoint "
            "of the same model (embed --weights reads OpenPhenom and timm weights)"
        )
    own = {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
    _load_strict(model, own, path, "model.")
    model.initial_weights = str(path)
