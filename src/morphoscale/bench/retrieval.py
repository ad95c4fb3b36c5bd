"""mAP with copairs: phenotypic activity (replicates vs controls) and consistency
(perturbations that share an annotation, e.g. a complex or a compound target)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import InputError

logging.getLogger("copairs").setLevel(logging.WARNING)


def _map(ap: pd.DataFrame, sameby: str, null_size: int, threshold: float, seed: int) -> pd.DataFrame:
    from copairs.map import mean_average_precision

    return mean_average_precision(ap, [sameby], null_size=null_size, threshold=threshold, seed=seed, progress_bar=False)


def activity_average_precision(X: np.ndarray, obs: pd.DataFrame) -> pd.DataFrame:
    """Average precision of every treatment well: its replicates (positives) ranked among
    the control wells (negatives) by cosine similarity. `row` is the well's row in X."""
    from copairs.map import average_precision

    meta = pd.DataFrame({"perturbation": obs["perturbation"].astype(str).to_numpy(), "is_control": obs["is_control"].to_numpy(bool), "row": np.arange(len(obs))})
    if not meta["is_control"].any():
        raise InputError("phenotypic activity needs control wells in the embeddings")
    # copairs' reference-index recipe: each control its own index, every treatment well -1, so that
    # control-control pairs are not positives and treatment-treatment pairs are not negatives.
    meta["reference"] = np.where(meta["is_control"], np.arange(len(meta)), -1)
    ap = average_precision(meta, np.asarray(X, dtype=np.float64), pos_sameby=["perturbation", "reference"], pos_diffby=[],
                           neg_sameby=[], neg_diffby=["perturbation", "reference"], progress_bar=False)
    return ap[~ap["is_control"]].reset_index(drop=True)


def phenotypic_activity(X: np.ndarray, obs: pd.DataFrame, null_size: int = 10000, threshold: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Per perturbation: mAP of retrieving its replicate wells among control wells, with
    permutation p-values and BH correction (copairs): mean_average_precision, p_value,
    corrected_p_value, below_corrected_p."""
    return _map(activity_average_precision(X, obs), "perturbation", null_size, threshold, seed)


def phenotypic_consistency(X: np.ndarray, genes: list[str], annotation: dict[str, list[str]], min_members: int = 2,
                           null_size: int = 10000, threshold: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Per annotation group (complex): can its members be retrieved among members of other groups?

    One row per (gene, group) membership; positives share the group (and are different genes);
    negatives are in another group and are another gene.
    """
    from copairs.map import average_precision

    index = {g: i for i, g in enumerate(genes)}
    rows = [(name, g) for name, members in annotation.items() for g in members if g in index]
    meta = pd.DataFrame(rows, columns=["group", "gene"])
    sizes = meta["group"].value_counts()
    meta = meta[meta["group"].isin(sizes.index[sizes >= min_members])].reset_index(drop=True)
    if meta["group"].nunique() < 2:
        raise InputError(f"fewer than 2 annotation groups have >= {min_members} members in the map")
    feats = np.asarray(X, dtype=np.float64)[meta["gene"].map(index).to_numpy()]
    ap = average_precision(meta, feats, pos_sameby=["group"], pos_diffby=["gene"], neg_sameby=[], neg_diffby=["group", "gene"], progress_bar=False)
    return _map(ap, "group", null_size, threshold, seed)
