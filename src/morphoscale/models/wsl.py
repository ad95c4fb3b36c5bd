"""Weakly supervised learning (WSL): classify the perturbation (genes, compounds and controls
as classes) and keep the penultimate layer as the embedding. The MAE paper's baseline is a
DenseNet-161 trained this way.

With `adabn`, training draws every mini-batch from one experimental batch, so BatchNorm
normalizes with that batch's statistics and the classifier cannot use batch identity; to
embed, the statistics are re-estimated per experimental batch (Li et al. 2016, AdaBN; see
models/adabn.py and embed.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .paradigm import BackboneModel, BaselineConfig


class WeaklySupervisedClassifier(BackboneModel):
    def __init__(self, cfg: BaselineConfig):
        super().__init__(cfg)
        if cfg.n_classes < 2:
            raise ValueError("a weakly supervised classifier needs at least 2 perturbation classes")
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(self.encoder.dim, cfg.n_classes))

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(imgs))

    def training_loss(self, batch: dict, generator=None):
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        losses = {"loss": loss, "accuracy": acc.detach()}
        trivial = prior_cross_entropy(self, batch["label"])
        if trivial is not None:
            losses["trivial"] = trivial
        return losses, None


def prior_cross_entropy(model, labels: torch.Tensor) -> torch.Tensor | None:
    """The loss of predicting the training set's class frequencies (`class_prior`, set by
    train): the classifier's trivial level (train/learning_check.py)."""
    prior = getattr(model, "class_prior", None)
    if prior is None:
        return None
    return -torch.log(prior.to(labels.device)[labels].clamp_min(1e-12)).mean()
