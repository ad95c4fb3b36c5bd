"""What every baseline shares: one config type, the embedding from the backbone, and the
training interface the Lightning module calls (the masked models implement it too).

Interface of a trainable model (MAE-ViT, CA-MAE, MU-Net and the baselines here):
  training_loss(batch, generator) -> (losses, preview)
      batch: {"image": (N, C, H, W), "label": (N,), "batch": (N,)}; for models with
      `multi_view = True` (BYOL) instead {"views": [(N, C, H, W), ...], ...}.
      losses: dict with "loss" (what is minimized) and its named parts.
      preview: None, or {name: (1, C, H, W)} panels for the preview PNGs.
  embed(images, layer=-1, pooling=None) -> (N, D); pooling None = `default_pooling`
      (models/readout.py: pooled over positions, at any stage or block).
  after_optimizer_step(step, max_steps): a hook (BYOL's EMA update).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backbones import create_backbone


@dataclass
class BaselineConfig:
    """One config type for every baseline preset (weakly supervised, autoencoders, BYOL)."""

    paradigm: str = "wsl"  # wsl | ae | rae | byol
    backbone: str = "midl_cnn"
    img_size: int = 64
    in_chans: int = 6
    n_classes: int = 0  # set from the store's perturbations when a model needs labels
    width: float = 1.0  # MIDL CNN width multiplier
    small_stem: bool = False  # torchvision CNNs: 3x3/1 stem for small crops
    drop_path: float = 0.0  # ViT backbones
    dropout: float = 0.0  # before the classifier
    adabn: bool = (
        False  # WSL: per-batch normalization statistics (train on one batch per step, re-estimate per batch to embed)
    )
    classifier_weight: float = 1.0  # rae: weight of the perturbation-classifier term
    proj_hidden: int = 512  # byol
    proj_dim: int = 128
    ema_decay: float = 0.99
    ema_schedule: str = "constant"  # constant | cosine (decay rises to 1 over training, as in Grill et al.)


class BackboneModel(nn.Module):
    """Base of the baselines: a backbone whose output is the embedding."""

    multi_view = False

    @property
    def default_pooling(self) -> str:
        """CNNs: the global averages of every stage (`concat`); ViTs: the mean of patch tokens.
        Chosen on simulator seed 1 (benchmarks/readout_choice.py, docs/embed.md): the MIDL
        CNN's last stage alone has 8 channels, and reading only it lost most of the signal."""
        return "concat" if hasattr(self.encoder, "stages") else "mean"

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = create_backbone(
            cfg.backbone, cfg.in_chans, cfg.img_size, cfg.width, cfg.small_stem, cfg.drop_path
        )

    @property
    def embed_dim(self) -> int:
        return self.encoder.dim

    def embed(self, imgs: torch.Tensor, layer: int = -1, pooling: str | None = None) -> torch.Tensor:
        """The backbone's stage (CNN) or block (ViT) `layer`, pooled over positions: for a
        classifier the last stage is its penultimate layer, for an autoencoder its bottleneck."""
        return self.encoder.readout(imgs, layer, self.default_pooling if pooling in (None, "default") else pooling)

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        pass


def mlp(dims: list[int], batchnorm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += ([nn.BatchNorm1d(b)] if batchnorm else []) + [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)
