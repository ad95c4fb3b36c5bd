"""What a training run cost: wall time, images seen, images/s, peak memory, parameters and
FLOPs, written to `resources.json` in the run folder so that runs of different paradigms
can be compared at equal budget (issue #9's grid reads it).

FLOPs are counted, not estimated: torch's FlopCounterMode over one training step (forward
and backward, matmuls and convolutions) of a copy of the model on a batch of the run's own
shape, divided by the images in that batch."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import lightning as L
import torch

from ..io import write_text
from ..memory import RssSampler, peak_rss_mb


def count_training_flops(model, batch: dict) -> int:
    """FLOPs of one forward + backward of model.training_loss on `batch` (a copy of the model:
    the run's weights, gradients and random state are untouched)."""
    from torch.utils.flop_counter import FlopCounterMode

    twin = copy.deepcopy(model).train()
    rng = torch.get_rng_state()
    try:
        with FlopCounterMode(display=False) as counter:
            losses, _ = twin.training_loss(batch, torch.Generator().manual_seed(0))
            losses["loss"].backward()
    finally:
        torch.set_rng_state(rng)
    return int(counter.get_total_flops())


class ResourceAccounting(L.Callback):
    """Measures the fit (from the first to the last optimizer step of this process) and writes
    resources.json on global rank 0. Images are counted from the batches, over all ranks."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.images = 0
        self.steps = 0
        self.t0: float | None = None
        self.flops_per_image: float | None = None
        self.sampler: RssSampler | None = None

    def on_train_start(self, trainer, pl_module):
        self.sampler = RssSampler().start()
        self.t0 = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        n = pl_module.images_per_step(batch) * trainer.world_size
        self.images += n
        self.steps += 1
        if self.flops_per_image is None and trainer.is_global_zero:
            mb = pl_module.model_batch(batch)
            self.flops_per_image = count_training_flops(pl_module.model, mb) / max(pl_module.images_per_step(batch), 1)

    def on_train_end(self, trainer, pl_module):
        if not trainer.is_global_zero or self.t0 is None:
            if self.sampler:
                self.sampler.stop()
            return
        wall = time.perf_counter() - self.t0
        peak = self.sampler.stop() if self.sampler else None
        params = sum(p.numel() for p in pl_module.model.parameters())
        record = {
            "wall_seconds": round(wall, 3),
            "optimizer_steps": self.steps,
            "images_seen": self.images,
            "images_per_second": round(self.images / wall, 3) if wall > 0 else None,
            "peak_rss_mb": round(peak, 1) if peak else None,  # sampled during this fit
            "process_peak_rss_mb": round(peak_rss_mb(), 1),  # the process's high-water mark, earlier work included
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
            "parameters": params,
            "flops_per_image": self.flops_per_image,
            "training_flops": self.flops_per_image * self.images if self.flops_per_image is not None else None,
            "world_size": trainer.world_size,
            "note": "this process's steps (a resumed run counts its own part)",
        }
        write_text(self.out / "resources.json", json.dumps(record, indent=2))
