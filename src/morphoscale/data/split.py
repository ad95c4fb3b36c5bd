"""A train / scored split of a screen that every paradigm shares.

A model that learns from perturbation labels (weak supervision, the regularized
autoencoder) and is then scored on a map of those same perturbations is graded on its own
training labels: the leak of the MIDL 2022 comparison. A split holds part of the screen out
of training; the map is then built and scored on the held-out part only, for every encoder
alike (label-free ones and the hand-crafted features too, so all are scored on the same rows).

- `by: perturbations`: a seeded fraction of each perturbation type's names (genes, compounds)
  is never trained on; the map holds only those (plus the controls, which every part needs to
  align on). The strict test: relationships among perturbations no model has seen.
- `by: wells`: a seeded fraction of every perturbation's wells (controls included) is never
  trained on; the map is made of those wells. New images of trained perturbations.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InputError


class Split(BaseModel):
    """Which part of the screen training never sees; maps and benchmarks use only that part."""

    model_config = ConfigDict(extra="forbid")

    # perturbations: unseen genes/compounds; wells: unseen wells of each
    by: Literal["none", "perturbations", "wells"] = "none"
    fraction: float = Field(0.5, gt=0, lt=1)  # of perturbation names, or of each perturbation's wells, held out
    seed: int = 0  # which part is drawn

    @property
    def active(self) -> bool:
        return self.by != "none"


def _rng(split: Split, *key: str) -> np.random.Generator:
    # a stable seed from names, not Python's salted hash
    return np.random.default_rng(
        [split.seed, *(int.from_bytes(k.encode()[:8].ljust(8, b"\0"), "little") for k in key), sum(map(len, key))]
    )


def held_out_perturbations(table: pd.DataFrame, split: Split) -> set[str]:
    """The perturbation names held out: a fraction of each type's names, controls never."""
    t = table[~table["is_control"].astype(bool)]
    out: set[str] = set()
    for ptype, names in sorted(t.groupby(t["perturbation_type"].astype(str))["perturbation"]):
        uniq = np.array(sorted(set(names.astype(str))))
        k = int(round(split.fraction * len(uniq)))
        if len(uniq) >= 2:
            k = min(max(k, 1), len(uniq) - 1)  # both sides keep at least one name of the type
        out.update(uniq[_rng(split, "perturbations", ptype).permutation(len(uniq))[:k]])
    return out


def held_out_wells(table: pd.DataFrame, split: Split) -> set[tuple[str, str]]:
    """(plate, well) pairs held out: a fraction of each perturbation's wells, at least one."""
    wells = table[["plate", "well", "perturbation"]].astype(str).drop_duplicates(["plate", "well"])
    out: set[tuple[str, str]] = set()
    for pert, g in sorted(wells.groupby("perturbation")):
        keys = sorted(zip(g["plate"], g["well"]))
        k = int(round(split.fraction * len(keys)))
        k = min(max(k, 1), len(keys) - 1) if len(keys) >= 2 else 0  # a lone well stays in training
        # _rng reads 8 bytes of a key: a digest, so names sharing a prefix draw independently
        digest = hashlib.sha256(pert.encode()).hexdigest()
        out.update(keys[i] for i in _rng(split, "wells", digest).permutation(len(keys))[:k])
    return out


def held_out_mask(table: pd.DataFrame, split: Split, source: str = "the table") -> np.ndarray:
    """Rows (sites of a site table, or wells of an embedding) in the held-out part. Under
    `by: perturbations` the controls count as held out too: maps align on them."""
    need = (
        ["perturbation", "is_control", "perturbation_type"]
        if split.by == "perturbations"
        else ["plate", "well", "perturbation"]
    )
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise InputError(f"{source}: a split by {split.by} needs column(s) {', '.join(missing)}")
    if split.by == "perturbations":
        held = held_out_perturbations(table, split)
        return table["is_control"].astype(bool).to_numpy() | table["perturbation"].astype(str).isin(held).to_numpy()
    if split.by == "wells":
        return in_wells(table, held_out_wells(table, split))
    return np.ones(len(table), bool)


def in_wells(table: pd.DataFrame, wells: set[tuple[str, str]]) -> np.ndarray:
    """Which rows of a table with plate and well columns lie in `wells`."""
    keys = pd.MultiIndex.from_arrays([table["plate"].astype(str), table["well"].astype(str)])
    return keys.isin(list(wells))


def training_sites(sites: pd.DataFrame, split: Split) -> np.ndarray | None:
    """Site rows training may use (None: all). Under `by: perturbations` the controls train too."""
    if not split.active:
        return None
    held = held_out_mask(sites, split, "the store's site table")
    if split.by == "perturbations":
        held &= ~sites["is_control"].astype(bool).to_numpy()
    rows = np.flatnonzero(~held)
    if not len(rows):
        raise InputError(f"split by {split.by} at fraction {split.fraction} leaves no site to train on")
    return rows


def scored_wells(sites: pd.DataFrame, split: Split) -> set[tuple[str, str]]:
    """(plate, well) of the held-out part, from the store's site table: the one place the split
    is drawn, so every encoder's embedding is cut the same way whatever rows it holds."""
    held = held_out_mask(sites, split, "the store's site table")
    return set(zip(sites["plate"].astype(str)[held], sites["well"].astype(str)[held]))


def scored_part(emb, wells: set[tuple[str, str]] | None, source: str = "embeddings"):
    """The rows of an embedding AnnData (site or well level) in `wells`; all when None."""
    if wells is None:
        return emb
    missing = [c for c in ("plate", "well") if c not in emb.obs.columns]
    if missing:
        raise InputError(
            f"{source}: obs lacks column(s) {', '.join(missing)}, needed to keep the held-out wells of the split"
        )
    keep = in_wells(emb.obs, wells)
    if not keep.any():
        raise InputError(f"{source}: none of its rows is in the held-out part of the split")
    return emb[keep].copy()


def split_of_training(train_dir) -> set[tuple[str, str]]:
    """The held-out wells of a finished training run, from its config.json and store."""
    import json
    from pathlib import Path

    from .store import ImageStore

    cfg_path = Path(train_dir) / "config.json"
    try:
        saved = json.loads(cfg_path.read_text())
        split = Split(**saved["train"].get("split", {}))
        store = saved["store"]
    except FileNotFoundError:
        raise InputError(f"{cfg_path}: not found; give a folder written by `morphoscale train`") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{cfg_path}: not a morphoscale train config ({type(e).__name__}: {e})") from None
    if not split.active:
        raise InputError(f"{cfg_path}: this training run held nothing out (train key 'split' is by: none)")
    return scored_wells(ImageStore(store).sites, split)
