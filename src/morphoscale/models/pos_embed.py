"""Fixed 2-D sine-cosine position embeddings, computed for whatever grid a crop gives."""

from __future__ import annotations

import torch


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.double().reshape(-1)[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(grid_h * grid_w, dim), row-major like the patch order; half the dims encode y, half x."""
    if dim % 4:
        raise ValueError("embedding dim must be a multiple of 4 for 2-D sin-cos")
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, ys), sincos_1d(dim // 2, xs)], dim=1).float()
