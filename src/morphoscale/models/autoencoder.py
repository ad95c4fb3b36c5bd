"""Convolutional autoencoders: plain (unsupervised) and regularized with a perturbation
classifier on the bottleneck (the MIDL 2022 paradigms).

The regularized loss is  mse(reconstruction, input) + classifier_weight * cross_entropy(
classifier(z), perturbation),  and the classifier's gradient flows into the encoder (the
reference implementation cut it, so its "regularized" model was a plain autoencoder plus a
probe). tests/test_baselines.py checks the coupling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import MIDLSimpleCNN, MIDLSimpleDecoder
from .paradigm import BackboneModel, BaselineConfig
from .wsl import prior_cross_entropy


class ConvAutoencoder(BackboneModel):
    def __init__(self, cfg: BaselineConfig):
        super().__init__(cfg)
        if not isinstance(self.encoder, MIDLSimpleCNN):
            raise ValueError(
                f"key 'backbone': the autoencoders use the MIDL CNN (midl_cnn, any width), not {cfg.backbone}"
            )
        self.decoder = MIDLSimpleDecoder(self.encoder, cfg.in_chans)
        self.regularized = cfg.paradigm == "rae"
        if self.regularized:
            if cfg.n_classes < 2:
                raise ValueError("a regularized autoencoder needs at least 2 perturbation classes")
            self.classifier = nn.Linear(self.encoder.dim, cfg.n_classes)

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(imgs)
        return z, self.decoder(z)

    def training_loss(self, batch: dict, generator=None):
        imgs = batch["image"]
        z, recon = self(imgs)
        rec = F.mse_loss(recon, imgs)
        losses = {"reconstruction": rec.detach()}
        loss = rec
        trivial = (imgs.detach() ** 2).mean()  # predicting zero, the mean of a standardized image
        if self.regularized:
            logits = self.classifier(z)  # no detach: the classifier shapes the encoder
            ce = F.cross_entropy(logits, batch["label"])
            loss = rec + self.cfg.classifier_weight * ce
            losses |= {
                "classifier": ce.detach(),
                "accuracy": (logits.argmax(1) == batch["label"]).float().mean().detach(),
            }
            prior = prior_cross_entropy(self, batch["label"])
            trivial = trivial + self.cfg.classifier_weight * prior if prior is not None else None
        losses["loss"] = loss
        if trivial is not None:
            losses["trivial"] = trivial
        return losses, {"input": imgs[:1].detach(), "reconstruction": recon[:1].detach()}
