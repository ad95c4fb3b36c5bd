"""AdaBN (Li et al. 2016): re-estimate BatchNorm statistics on the images of one domain (here:
one experimental batch), so features are normalized within their batch at embedding time."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batchnorm_state(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.running_mean.clone(), m.running_var.clone()) for m in _batchnorms(model)]


def load_batchnorm_state(model: nn.Module, state: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for m, (mean, var) in zip(_batchnorms(model), state):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)


@torch.no_grad()
def estimate_batchnorm_state(
    model: nn.Module, images: Iterable[torch.Tensor], forward=None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """BatchNorm statistics over all the given images (the exact average over mini-batches:
    momentum None), leaving the model's own statistics and mode as they were."""
    bns = _batchnorms(model)
    saved = batchnorm_state(model)
    modes = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    forward = forward or model
    for x in images:
        forward(x)
    state = batchnorm_state(model)
    load_batchnorm_state(model, saved)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    for m, t in modes:
        m.train(t)
    return state
