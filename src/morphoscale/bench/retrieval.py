"""mAP: phenotypic activity (replicates vs controls) and consistency (perturbations that share an
annotation, e.g. a complex or a compound target), in copairs' definitions and copairs' p-values,
computed in bounded memory (bench/average_precision.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .average_precision import activity_ap, consistency_ap, mean_average_precision


def activity_average_precision(X: np.ndarray, obs: pd.DataFrame) -> pd.DataFrame:
    """Average precision of every treatment well: its replicates (positives) ranked among
    the control wells (negatives) by cosine similarity. `row` is the well's row in X."""
    return activity_ap(X, obs)


def phenotypic_activity(
    X: np.ndarray, obs: pd.DataFrame, null_size: int = 10000, threshold: float = 0.05, seed: int = 0
) -> pd.DataFrame:
    """Per perturbation: mAP of retrieving its replicate wells among control wells, with
    permutation p-values and BH correction: mean_average_precision, p_value,
    corrected_p_value, below_corrected_p."""
    return mean_average_precision(activity_ap(X, obs), "perturbation", null_size, threshold, seed)


def phenotypic_consistency(
    X: np.ndarray,
    genes: list[str],
    annotation: dict[str, list[str]],
    min_members: int = 2,
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Per annotation group (complex): can its members be retrieved among members of other groups?

    One row per (gene, group) membership; positives share the group (and are different genes);
    negatives are in another group and are another gene.
    """
    return mean_average_precision(
        consistency_ap(X, genes, annotation, min_members), "group", null_size, threshold, seed
    )
