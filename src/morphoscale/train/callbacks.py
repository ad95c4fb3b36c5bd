"""Training callbacks: the data stream resumed where a checkpoint left it, reconstruction
previews as PNG, a guard against NaN/inf losses, and the learning check's verdict at the end
(train/learning_check.py)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ..errors import MorphoscaleError
from ..io import atomic_file
from .learning_check import sentence, summarize


class ResumeDataStream(L.Callback):
    """A resumed run continues the data stream at the restored step (the datamodule's sampler
    skips what was seen), so a resumed run sees the same crops as an uninterrupted one."""

    def on_train_start(self, trainer, pl_module):
        dm = trainer.datamodule
        if dm is not None and getattr(dm, "sampler", None) is not None:
            dm.sampler.set_start(trainer.global_step * dm.batch_size)


class NonFiniteLoss(MorphoscaleError):
    pass


class NonFiniteLossGuard(L.Callback):
    """Stops training at the first NaN or infinite loss, before the optimizer step spoils the
    weights; the last good checkpoint stays as it was."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        loss = trainer.callback_metrics.get("train/loss")
        bad = [n for n, p in pl_module.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if (loss is not None and not torch.isfinite(loss)) or bad:
            raise NonFiniteLoss(
                f"non-finite loss or gradient at step {trainer.global_step} (first bad parameter: {bad[0] if bad else 'loss'}); "
                f"the last good checkpoint is in {Path(trainer.default_root_dir) / 'checkpoints'}; lower the lr or check the inputs"
            )


class ReconstructionPreviews(L.Callback):
    """Every N steps, the model's preview panels (masked input / reconstruction / target for
    the masked models, input / reconstruction for autoencoders), one row per channel, as a PNG."""

    def __init__(self, folder: Path, every: int):
        self.folder = Path(folder)
        self.every = every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not trainer.is_global_zero or (step % self.every and step != trainer.max_steps):
            return
        panels = getattr(pl_module, "_preview", None)
        if not panels:
            return
        from PIL import Image

        panels = {k: v.float()[0].cpu().numpy() for k, v in panels.items()}
        ref = panels.get("target", panels.get("input", next(iter(panels.values()))))  # sets the display range
        rows = []
        for c in range(ref.shape[0]):
            lo, hi = np.percentile(ref[c], [1, 99])
            rows.append(
                np.concatenate([np.clip((v[c] - lo) / max(hi - lo, 1e-6), 0, 1) for v in panels.values()], axis=1)
            )
        grid = (np.concatenate(rows, axis=0) * 255).astype(np.uint8)
        self.folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(self.folder / f"step{step:07d}.png")


class LearningCheck(L.Callback):
    """Collects the loss and the floors the module logged at each step; at the end writes
    learning_check.json and prints its one line. A resumed run checks its own steps."""

    def __init__(self, folder: Path, console=None):
        self.folder = Path(folder)
        self.console = console
        self.values: dict[str, list[float]] = {"loss": [], "trivial": [], "interpolation": []}
        self.result: dict | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        for key in self.values:
            v = metrics.get(f"train/{key}")
            if v is not None:
                self.values[key].append(float(v))

    def on_train_end(self, trainer, pl_module):
        if not self.values["loss"] or not trainer.is_global_zero:
            return
        self.result = summarize(self.values["loss"], self.values["trivial"], self.values["interpolation"])
        with atomic_file(self.folder / "learning_check.json", overwrite=True) as tmp:  # a resumed run replaces it
            tmp.write_text(json.dumps(self.result, indent=2))
        if self.console is not None:
            self.console.print(sentence(self.result), markup=False, highlight=False)


def step_progress_bar():
    """Lightning's rich bar, counting the run's steps ('train 1234/9600'): training here is a
    step budget over an endless sampler, so its default 'Epoch 0/-2' says nothing."""
    from lightning.pytorch.callbacks import RichProgressBar

    class StepProgressBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            return "train"

        @property
        def total_train_batches(self):
            return self.trainer.max_steps if self.trainer.max_steps > 0 else float("inf")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if not self.is_disabled and self.train_progress_bar_id is None:
                self._initialize_train_progress_bar_id()
            self._update(self.train_progress_bar_id, trainer.global_step)
            self._update_metrics(trainer, pl_module)
            self.refresh()

    return StepProgressBar()
