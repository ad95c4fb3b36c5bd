"""A map's profiles as the metrics read them: one row per gene (or compound), in the map's order."""

from __future__ import annotations

import numpy as np
import pandas as pd


def gene_profiles(m, with_compounds: bool = False) -> tuple[np.ndarray, list[str]]:
    """The gene profiles of a map (and with_compounds: every compound-concentration profile too,
    named as the map's index names them, e.g. 'CPD@0.1')."""
    kind = m.obs["perturbation_type"].astype(str)
    rows = ((kind == "gene") | ((kind == "compound") & with_compounds)).to_numpy() & ~m.obs["is_control"].to_numpy(bool)
    names = np.where(kind == "gene", m.obs["perturbation"].astype(str), m.obs_names.astype(str))
    return np.asarray(m.X, dtype=np.float64)[rows], names[rows].tolist()


def compound_profiles(m) -> tuple[np.ndarray, list[str]]:
    """One profile per compound: the mean of its (concentration) rows in the map."""
    obs = m.obs
    rows = np.flatnonzero((obs["perturbation_type"].astype(str) == "compound").to_numpy())
    if not len(rows):
        return np.zeros((0, m.n_vars)), []
    codes, uniq = pd.factorize(obs["perturbation"].astype(str).to_numpy()[rows], sort=True)
    sums = np.zeros((len(uniq), m.n_vars))
    np.add.at(sums, codes, np.asarray(m.X, dtype=np.float64)[rows])
    return sums / np.bincount(codes)[:, None], list(uniq)
