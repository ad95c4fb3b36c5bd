"""Readouts: how a model's activations become one embedding vector per image.

Every family is read by pooling, never by a flattened, position-indexed map (a site is the
mean of its tiles, so an embedding that indexes positions changes when a tile shifts). A
CNN or U-Net exposes its stages (the feature maps after each stage, shallow to deep), a
ViT its blocks; `layer` picks one (-1 = the last), `pooling` says how it is reduced:

- `mean`: global average over positions (CNN, U-Net) or patch tokens (ViT);
- `cls`: the class token (ViT);
- `concat`: the global averages of every stage up to `layer`, concatenated (CNN, U-Net:
  what a U-Net's decoder reads through its skips, not only the bottleneck they bypass);
- `flatten`: the position-indexed map of the MIDL 2022 paper's CNN readout, kept only to
  reproduce it.
"""

from __future__ import annotations

import torch

CNN_POOLINGS = ("mean", "concat", "flatten")


def pick_layer(n: int, layer: int) -> int:
    """A layer index in [-n, n) -> its position; anything else is a one-line error."""
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} is out of range: this model has {n} (0..{n - 1}, or -1 for the last)")
    return layer % n


def pool_channel_tokens(x: torch.Tensor, n_channels: int, pooling: str) -> torch.Tensor:
    """A channel-agnostic ViT's tokens (cls first, then each channel's patches in turn) ->
    mean of the patch tokens, the cls token, or per_channel: each channel's mean, concatenated."""
    if pooling == "mean":
        return x[:, 1:].mean(dim=1)
    if pooling == "cls":
        return x[:, 0]
    if pooling == "per_channel":
        N = x.shape[0]
        return x[:, 1:].reshape(N, n_channels, -1, x.shape[-1]).mean(dim=2).reshape(N, -1)
    raise ValueError(f"pooling '{pooling}' is not defined (mean, cls or per_channel)")


def pool_stages(stages: list[torch.Tensor], layer: int, pooling: str) -> torch.Tensor:
    """(N, C_i, H_i, W_i) feature maps, shallow to deep -> (N, D) by `pooling` at `layer`."""
    k = pick_layer(len(stages), layer)
    if pooling == "mean":
        return stages[k].mean(dim=(2, 3))
    if pooling == "concat":
        return torch.cat([s.mean(dim=(2, 3)) for s in stages[: k + 1]], dim=1)
    if pooling == "flatten":
        return stages[k].flatten(1)
    raise ValueError(f"pooling '{pooling}' is not defined for this model ({', '.join(CNN_POOLINGS)})")


class StagedReadout:
    """For a backbone with `stages(x)`: its readout is `pool_stages` over them."""

    def readout(self, x: torch.Tensor, layer: int = -1, pooling: str = "mean") -> torch.Tensor:
        return pool_stages(self.stages(x), layer, pooling)
