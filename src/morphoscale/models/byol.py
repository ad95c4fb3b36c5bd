"""BYOL (Grill et al. 2020): an online network (encoder, projector, predictor) learns to
predict a slowly moving target network's projection of another view of the same site.

Loss: for each online view i and each global view j != i, 2 - 2 cos(q_i, z'_j), averaged
(with two global views this is the paper's symmetric loss). After every optimizer step the
target follows the online weights: target <- decay * target + (1 - decay) * online, with
decay constant (default 0.99) or rising to 1 on a cosine (`ema_schedule: cosine`).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from .paradigm import BackboneModel, BaselineConfig, mlp


class BYOL(BackboneModel):
    multi_view = True

    def __init__(self, cfg: BaselineConfig):
        super().__init__(cfg)
        self.projector = mlp([self.encoder.dim, cfg.proj_hidden, cfg.proj_dim])
        self.predictor = mlp([cfg.proj_dim, cfg.proj_hidden, cfg.proj_dim])
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self.target_parameters():
            p.requires_grad_(False)

    def online_parameters(self):
        yield from self.encoder.parameters()
        yield from self.projector.parameters()

    def target_parameters(self):
        yield from self.target_encoder.parameters()
        yield from self.target_projector.parameters()

    def ema_decay(self, step: int, max_steps: int) -> float:
        base = self.cfg.ema_decay
        if self.cfg.ema_schedule == "cosine":
            return 1 - (1 - base) * (math.cos(math.pi * step / max(max_steps, 1)) + 1) / 2
        return base

    @torch.no_grad()
    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        tau = self.ema_decay(step, max_steps)
        for t, o in zip(self.target_parameters(), self.online_parameters()):
            t.mul_(tau).add_(o.detach(), alpha=1 - tau)
        # BatchNorm running statistics follow the same average
        for t, o in zip(
            list(self.target_encoder.buffers()) + list(self.target_projector.buffers()),
            list(self.encoder.buffers()) + list(self.projector.buffers()),
        ):
            if t.dtype.is_floating_point:
                t.mul_(tau).add_(o, alpha=1 - tau)
            else:
                t.copy_(o)

    def training_loss(self, batch: dict, generator=None):
        views = batch["views"]
        n_global = batch.get("n_global", 2)
        if len(views) < 2 or n_global < 1:
            raise ValueError("BYOL needs at least two views per site")
        N = views[0].shape[0]
        x = torch.cat(views)
        q = F.normalize(self.predictor(self.projector(self.encoder(x))), dim=-1).split(N)
        with torch.no_grad():
            z = F.normalize(self.target_projector(self.target_encoder(torch.cat(views[:n_global]))), dim=-1).split(N)
        pairs = [(i, j) for i in range(len(views)) for j in range(n_global) if i != j]
        loss = torch.stack([(2 - 2 * (q[i] * z[j]).sum(-1)).mean() for i, j in pairs]).mean()
        return {"loss": loss}, None
