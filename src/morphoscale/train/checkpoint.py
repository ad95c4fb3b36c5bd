"""Checkpoints of `train`, and the one loader of any weights file: a morphoscale checkpoint
rebuilds its training module (model, preset, channel names); OpenPhenom's and timm's state
dicts go to models/weights.py. Embed, the nucleus probe and training's own resume read here."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, why
from ..io import atomic_file
from ..models.weights import LAYOUTS, detect_layout, foreign_encoder, input_norm_for, read_state_dict


def load_module(checkpoint: Path):
    """The trained module (and its model, preset and channel names) from any checkpoint of `train`."""
    from .module import TrainingModule

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise InputError(f"{checkpoint}: checkpoint not found")
    try:
        return TrainingModule.load_from_checkpoint(str(checkpoint), map_location="cpu")
    except Exception as e:
        raise InputError(f"{checkpoint}: not a morphoscale checkpoint ({why(e, 200)})") from None


def load_pretrained(
    path: Path,
    channels: list[str],
    layout: str = "auto",
    arch: str | None = None,
    mlp_bias: str = "auto",
    input_norm: str = "auto",
    mean: list[float] | None = None,
    std: list[float] | None = None,
):
    """The encoder the weights at `path` define, loaded, in eval mode, for these channel names,
    with `input_norm`: how its pixels are to be prepared (models/weights.input_norm_for)."""
    if layout not in LAYOUTS:
        raise InputError(f"--weights-layout {layout}: unknown; choose {', '.join(LAYOUTS)}")
    path = Path(path)
    how = "lightning checkpoint"
    if layout != "morphoscale":
        sd, how = read_state_dict(path)
        layout = detect_layout(sd, path) if layout == "auto" else layout
    if layout == "morphoscale":
        if mlp_bias != "auto":
            raise InputError(
                f"--mlp-bias {mlp_bias}: only for OpenPhenom or timm weights, not a morphoscale checkpoint"
            )
        model = load_module(path).model
    else:
        model = foreign_encoder(sd, path, channels, layout, arch, mlp_bias)
    model.input_norm = input_norm_for(model, layout, path, input_norm, mean, std)
    model.weights_source = {
        "file": str(path),
        "read_as": how,
        "layout": layout,
        "input_norm": model.input_norm.describe(),
    }
    if layout != "morphoscale":
        model.weights_source["mlp_bias"] = model.cfg.mlp_bias
    return model.eval()


def save_untrained(module, out: Path) -> Path:
    """model.ckpt of the seeded, untrained model, loadable like any trained checkpoint."""
    import lightning as L
    import torch

    final = out / "model.ckpt"
    state = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "global_step": 0,
        "epoch": 0,
        "pytorch-lightning_version": L.__version__,
        "random_init": True,
    }
    with atomic_file(final, overwrite=True) as tmp:
        torch.save(state, tmp)
    return final
