"""Masking noise that does not depend on how a batch is split over processes.

Under data parallelism each rank holds a slice of the global batch. If every rank drew its
noise from the same seeded generator, rank 1 would mask its images exactly as rank 0 does,
and the run would differ from one process with the same global batch. A ShardGenerator
makes each rank draw the whole global batch's noise and keep its own rows, so a DDP run
masks every image as a single process would (tests/test_distributed.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ShardGenerator:
    generator: torch.Generator
    rank: int
    world: int


def batch_uniform(n: int, length: int, device, generator: torch.Generator | ShardGenerator | None) -> torch.Tensor:
    """U(0, 1) noise of shape (n, length) for this process's n images."""
    if isinstance(generator, ShardGenerator):
        full = torch.rand(n * generator.world, length, device=device, generator=generator.generator)
        return full[generator.rank * n : (generator.rank + 1) * n]
    return torch.rand(n, length, device=device, generator=generator)
