"""Is the model learning anything a trivial or interpolating model would not?

Every step the model measures, on the same images (and the same mask), the loss of the
trivial prediction (`trivial`: zero in self-standardized units for reconstructions, the
class prior for classifiers) and, for masked models, of interpolating the visible pixels
(`interpolation`; models/masked.py). They are logged beside the loss (metrics.csv,
TensorBoard), and at the end of training one line says which of them the loss cleared:

- beyond interpolation (masked models) / beyond the trivial prediction (the others): the
  final loss is below every floor by more than the tolerance;
- only interpolating: below the trivial prediction but not below interpolation;
- above the trivial prediction: lower than its first loss, but not yet below predicting zero or the prior;
- not learning: not below its first loss either.

"Final" is the mean loss over the last 10% of steps (at least 5), "first" over the first
5; the floors are means over every step. The tolerance (2% of the floor) keeps the
step-to-step noise of a loss from deciding. BYOL has no trivial level: its loss can fall
by collapse, so its line says only whether the loss fell.
"""

from __future__ import annotations

import math

import numpy as np

TOLERANCE = 0.02
LEVELS_NOTE = (
    "Floors measured on the same crops and masks as the loss: the trivial prediction (zero in self-standardized units; "
    "the class prior for a classifier) and, for masked models, a Gaussian interpolation of the visible pixels. "
    "Verdict from the mean loss of the last 10% of steps against them, with a 2% tolerance."
)


def verdict(
    first: float, final: float, trivial: float | None, interpolation: float | None = None, tol: float = TOLERANCE
) -> str:
    """Which floors the final loss cleared (the module docstring lists the answers)."""
    floors = [v for v in (trivial, interpolation) if v is not None and math.isfinite(v)]
    if floors and final < min(floors) * (1 - tol):
        return "beyond interpolation" if interpolation is not None else "beyond the trivial prediction"
    if interpolation is not None and trivial is not None and final < trivial * (1 - tol):
        return "only interpolating"
    if final < first * (1 - tol):
        return "above the trivial prediction" if floors else "loss falling (no trivial level for this model)"
    return "not learning"


def summarize(losses: list[float], trivial: list[float], interpolation: list[float], tol: float = TOLERANCE) -> dict:
    """The learning check of a run from its per-step values."""
    loss = np.asarray(losses, dtype=float)
    k = max(5, len(loss) // 10)
    first, final = float(loss[: min(5, len(loss))].mean()), float(loss[-k:].mean())
    triv = float(np.mean(trivial)) if len(trivial) else None
    interp = float(np.mean(interpolation)) if len(interpolation) else None
    return {
        "verdict": verdict(first, final, triv, interp, tol),
        "first_loss": first,
        "final_loss": final,
        "trivial_loss": triv,
        "interpolation_loss": interp,
        "steps": int(len(loss)),
        "final_over_last_steps": k,
        "tolerance": tol,
    }


def sentence(s: dict) -> str:
    parts = [f"loss {s['first_loss']:.3f} -> {s['final_loss']:.3f} (last {s['final_over_last_steps']} steps)"]
    if s["interpolation_loss"] is not None:
        parts.append(f"interpolating the visible pixels {s['interpolation_loss']:.3f}")
    if s["trivial_loss"] is not None:
        parts.append(f"trivial prediction {s['trivial_loss']:.3f}")
    return f"learning check: {s['verdict']}: " + ", ".join(parts)
