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


MLP_BIAS_CHOICES = ("auto", "legacy", "fixed")
INPUT_NORM_CHOICES = ("auto", "self", "instance", "mean_std")


def foreign_encoder(
    sd: dict, path: Path, channels: list[str], layout: str, arch: str | None = None, mlp_bias: str = "auto"
):
    """The encoder an OpenPhenom or timm state dict defines, for these channel names (a
    morphoscale checkpoint is read by train/checkpoint.py, which knows the training module).
    mlp_bias auto: OpenPhenom's blocks as it was trained (legacy), a timm ViT's as the pinned timm builds them."""
    if mlp_bias not in MLP_BIAS_CHOICES:
        raise InputError(f"--mlp-bias: '{mlp_bias}' is not one of {', '.join(MLP_BIAS_CHOICES)}")
    if layout == "openphenom":
        return _openphenom(sd, path, channels, "legacy" if mlp_bias == "auto" else mlp_bias)
    return _timm(sd, path, channels, arch, "fixed" if mlp_bias == "auto" else mlp_bias)


def input_norm_for(model, layout: str, path: Path, input_norm: str = "auto", mean: list[float] | None = None, std=None):
    """How these weights want their pixels (data/transforms.InputNorm): auto is what the code
    that trained them did: ours self-standardize, OpenPhenom's predict divides by 255 and
    instance-normalizes (eps 1e-5), a timm checkpoint takes its mean and std (--mean/--std, the
    config.json beside it, else timm's pretrained config for --arch)."""
    from ..data.transforms import SELF_STANDARDIZE, InputNorm

    if input_norm not in INPUT_NORM_CHOICES:
        raise InputError(f"--input-norm: '{input_norm}' is not one of {', '.join(INPUT_NORM_CHOICES)}")
    if bool(mean) != bool(std):
        raise InputError("--mean/--std: give both (one value per channel, or one for every channel)")
    kind = input_norm
    if kind == "auto":
        kind = "mean_std" if mean else {"morphoscale": "self", "openphenom": "instance", "timm": "mean_std"}[layout]
    if mean and kind != "mean_std":
        raise InputError(f"--mean/--std: used only by --input-norm mean_std, not {kind}")
    if layout == "morphoscale" and kind != "self":
        raise InputError(f"--input-norm {kind}: a morphoscale checkpoint was trained on self-standardized crops")
    if kind == "self":
        return SELF_STANDARDIZE
    if kind == "instance":
        return InputNorm("instance", eps=1e-5)
    mean, std, source = _mean_std(model, path, mean, std)
    n = len(model.channel_names)
    if len(mean) == 1:
        mean, std = mean * n, std * n
    if len(mean) != n or len(std) != n:
        raise InputError(
            f"{source}: {len(mean)} means and {len(std)} stds for {n} channels; give --mean/--std, one per channel "
            "(or one for all), or --input-norm self"
        )
    if min(std) <= 0:
        raise InputError(f"{source}: every std must be positive, got {list(std)}")
    return InputNorm("mean_std", eps=0.0, mean=tuple(map(float, mean)), std=tuple(map(float, std)))


def _mean_std(model, path: Path, mean, std) -> tuple[list, list, str]:
    """(mean, std, where they came from): the flags, the checkpoint's config.json, timm's config."""
    if mean:
        return list(mean), list(std), "--mean/--std"
    cfg = _config_json(path).get("pretrained_cfg")
    if isinstance(cfg, dict) and cfg.get("mean") and cfg.get("std"):
        return list(cfg["mean"]), list(cfg["std"]), f"{path.parent / 'config.json'} (pretrained_cfg)"
    if hasattr(model, "timm_mean_std"):
        m, s = model.timm_mean_std()
        return list(m), list(s), f"timm's pretrained config for {model.preset}"
    raise InputError(f"{path}: no mean and std known for these weights; give --mean/--std or --input-norm self")


def _config_json(path: Path) -> dict:
    """The config.json beside the weights (the Hub saves one), or {} when there is none or it is unreadable."""
    cfg = Path(path).parent / "config.json"
    try:
        out = json.loads(cfg.read_text()) if cfg.is_file() else {}
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _max_in_chans(path: Path) -> int:
    """The config.json beside the weights says how many channels its position table covers; else
    the released model's 11."""
    try:
        return int(_config_json(path)["encoder"]["max_in_chans"])
    except (KeyError, TypeError, ValueError):
        return 11


def _openphenom(sd: dict, path: Path, channels: list[str], mlp_bias: str):
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
        img_size=grid * p,
        patch_size=p,
        embed_dim=D,
        depth=depth,
        num_heads=max(D // 64, 1),
        max_in_chans=m,
        mlp_bias=mlp_bias,
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


def _timm(sd: dict, path: Path, channels: list[str], arch: str | None, mlp_bias: str):
    from .pretrained import TimmViTEncoder

    arch = arch or _config_json(path).get("architecture")  # a Hub folder names it
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
        model = TimmViTEncoder(arch, channels, img, mlp_bias)
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
