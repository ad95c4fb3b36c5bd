"""Profiles of a store's sites, as the embed and features verbs write them: one row per
crop, site or well with the site table's metadata (AnnData obs), assembled from the chunks
of a resumable job into an AnnData .h5ad (X streamed into HDF5: memory does not grow with
the store) or a parquet table with `Metadata_` columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..chunked import ChunkedJob
from ..io import atomic_file

LEVELS = ("crop", "site", "well")
SITE_SPECIFIC = ("site_id", "site")
# what embed and features do with a site whose image chunk is missing or damaged (--missing)
MISSING = {
    "error": "stop with one line naming the site and its chunk file",
    "blank": "profile it as a blank image (a warning says how many)",
    "skip": "leave it out of the output (a warning says how many; a well keeps its other sites)",
}


def apply_missing(store, policy: str) -> list[int]:
    """The damaged sites `policy` lets through, sorted: none for `error` (the first damaged
    chunk read stops the job); for `blank` and `skip`, every site whose chunk is missing,
    truncated or another store's, which the store then reads as blank images."""
    import warnings

    from ..errors import InputError, MorphoscaleWarning

    if policy not in MISSING:
        raise InputError(f"--missing: '{policy}' is not one of {', '.join(MISSING)}")
    if policy == "error":
        return []
    damaged = store.damaged_sites()
    if policy == "skip" and len(damaged) == len(store):
        raise InputError(f"{store.path}: every site's image chunk is missing or damaged; nothing is left to profile")
    store.blank_sites = frozenset(damaged)
    if damaged:
        more = f" and {len(damaged) - 1} more" if len(damaged) > 1 else ""
        done = "profiled as blank images" if policy == "blank" else "left out of the output"
        warnings.warn(
            f"{store.path}: {len(damaged)} of {len(store)} sites have a missing or damaged image chunk "
            f"({next(iter(damaged.values()))}{more}); {done} (--missing {policy})",
            MorphoscaleWarning,
            stacklevel=2,
        )
    return sorted(damaged)


def profile_obs(store, tiles, level: str, keep: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Row metadata at the level (of the sites `keep` says, all by default), and for wells
    the site -> well index (-1 for a site left out)."""
    sites = store.sites.copy()
    if keep is not None:
        sites = sites[keep].reset_index(drop=True)
    sites = sites[
        [c for c in sites.columns if not c.startswith(("source_", "illum_"))]
    ]  # file paths are the store's provenance, not metadata
    if level == "site":
        obs = sites
        obs.index = sites["site_id"].astype(str).to_numpy()
        return obs, None
    if level == "crop":
        rows = np.repeat(np.arange(len(sites)), tiles.tiles_per_site)
        obs = sites.iloc[rows].reset_index(drop=True)
        ys, xs = zip(*tiles.origins)
        obs["tile_y"] = np.tile(ys, len(sites))
        obs["tile_x"] = np.tile(xs, len(sites))
        obs.index = (
            obs["site_id"].astype(str) + "_" + obs["tile_y"].astype(str) + "_" + obs["tile_x"].astype(str)
        ).to_numpy()
        return obs, None
    key = sites["plate"].astype(str) + "_" + sites["well"].astype(str)
    codes, uniques = pd.factorize(key)
    first = (
        sites.groupby(codes, sort=True)
        .head(1)
        .set_index(pd.Index(codes[sites.groupby(codes, sort=True).head(1).index]))
    )
    obs = first.sort_index().drop(columns=[c for c in SITE_SPECIFIC if c in first.columns])
    obs["n_sites"] = np.bincount(codes)
    obs.index = np.asarray(uniques).astype(str)
    if keep is not None:
        every = np.full(len(keep), -1)
        every[keep] = codes
        codes = every
    return obs, codes


def profile_metadata(obs: pd.DataFrame) -> pd.DataFrame:
    """obs as the metadata columns of a profile table: every name prefixed `Metadata_` (the
    convention pycytominer and the JUMP profiles follow: features are the rest), the row
    name as `Metadata_obs_name`; `map --embeddings` reads such a table back."""
    meta = obs.reset_index(names="obs_name")
    meta.columns = [c if str(c).startswith("Metadata_") else f"Metadata_{c}" for c in meta.columns]
    return meta


def write_profiles(
    job: ChunkedJob,
    store,
    tiles,
    level: str,
    uns: dict,
    out: Path,
    fmt: str,
    var_names: list[str] | None = None,
    skip: list[int] | None = None,
) -> None:
    """Stream a finished job's chunks into the output, as AnnData .h5ad or a parquet profile
    table (a temporary name, fsynced, renamed when complete); the sites in `skip` are left out."""
    keep = None
    if skip:
        keep = np.ones(len(store), bool)
        keep[skip] = False
    obs, codes = profile_obs(store, tiles, level, keep)
    dim = job.load(0, mmap=True).shape[-1]
    var = pd.DataFrame(index=var_names or [f"emb_{k}" for k in range(dim)])

    def row_blocks():
        """The rows of X in order, one chunk at a time (wells: averaged over their sites first)."""
        if level == "well":
            sums = np.zeros((len(obs), dim), np.float64)
            for i, (a, b) in enumerate(job.chunks):
                c = codes[a:b]
                np.add.at(sums, c[c >= 0], job.load(i)[c >= 0])
            yield (sums / np.bincount(codes[codes >= 0])[:, None]).astype(np.float32)
            return
        for i, (a, b) in enumerate(job.chunks):
            block = job.load(i)
            yield (block if keep is None else block[keep[a:b]]).reshape(-1, dim)

    with atomic_file(out, overwrite=True) as tmp:  # the verb checked the output before its work
        if fmt == "parquet":
            rows = pd.DataFrame(np.concatenate(list(row_blocks())), columns=var.index)
            pd.concat([profile_metadata(obs), rows], axis=1).to_parquet(tmp, index=False)
        else:
            _write_h5ad(tmp, obs, var, uns, row_blocks())


def _write_h5ad(path: Path, obs: pd.DataFrame, var: pd.DataFrame, uns: dict, blocks) -> None:
    """An AnnData .h5ad with X streamed into HDF5 block by block: memory does not grow with the store."""
    import h5py
    from anndata.io import write_elem

    n, dim = len(obs), len(var)
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        X = f.create_dataset("X", shape=(n, dim), dtype="float32", chunks=(min(n, 4096), dim))
        X.attrs["encoding-type"] = "array"
        X.attrs["encoding-version"] = "0.2.0"
        start = 0
        for block in blocks:
            X[start : start + len(block)] = block
            start += len(block)
        write_elem(f, "obs", _h5_safe(obs))
        write_elem(f, "var", var)
        write_elem(f, "uns", uns)
        for k in ("obsm", "varm", "obsp", "varp", "layers"):
            write_elem(f, k, {})


def _h5_safe(obs: pd.DataFrame) -> pd.DataFrame:
    obs = obs.copy()
    for c in obs.columns:
        if obs[c].dtype == object or str(obs[c].dtype) == "string":
            obs[c] = obs[c].astype(str)
    return obs
