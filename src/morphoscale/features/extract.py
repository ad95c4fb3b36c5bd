"""`morphoscale features`: the hand-crafted baseline, written as the same AnnData `embed` writes.

Each site is segmented and measured per cell; the per-cell table is reduced to one row per
site (the median of each feature over its cells, and the cell count), then averaged over the
sites of a well like any embedding. Sites are processed in resumable chunks, one process per
core."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..determinism import record
from ..errors import InputError
from ..io import check_output, refuse_overlap
from .flatfield import radial_flatfield
from .measure import HARALICK, SHAPE, measure_cells
from .segment import estimate_diameter, segment_cells, segment_nuclei

RADIAL_BINS = 4
FLATFIELDS = ("none", "radial")
STATISTICS = ("median", "mean")


@dataclass(frozen=True)
class FeatureConfig:
    nuclear_channel: str = "DNA"  # the channel nuclei are segmented on
    nucleus_diameter: float | None = None  # pixels; None: estimated per site
    flatfield: str = "none"  # none | radial (fitted per site from its nuclei; for microscope fields)
    statistic: str = "median"  # per-site reduction of the per-cell features
    texture_levels: int = 8  # grey levels of the co-occurrence matrices

    def validate(self, channels: list[str]) -> None:
        if self.nuclear_channel not in channels:
            raise InputError(
                f"--nuclear-channel: '{self.nuclear_channel}' is not a channel of the store ({', '.join(channels)})"
            )
        if self.nucleus_diameter is not None and not self.nucleus_diameter > 0:
            raise InputError(f"--nucleus-diameter: must be positive, got {self.nucleus_diameter}")
        if self.flatfield not in FLATFIELDS:
            raise InputError(f"--flatfield: '{self.flatfield}' is not one of {', '.join(FLATFIELDS)}")
        if self.statistic not in STATISTICS:
            raise InputError(f"--statistic: '{self.statistic}' is not one of {', '.join(STATISTICS)}")
        if not 2 <= self.texture_levels <= 256:
            raise InputError(f"--texture-levels: must be between 2 and 256, got {self.texture_levels}")


# Each per-cell feature under two names: ours (the per-cell table's columns) and CellProfiler's
# (Compartment_Category_Feature[_Channel[_parameters]]), so that profiles read by pycytominer
# (`infer_cp_features`: columns starting Cells/Nuclei/Image) or beside CellProfiler's own are
# named alike. One list makes both, so the two can never fall out of step.
CP_COMPARTMENTS = {"nucleus": "Nuclei", "cell": "Cells"}
CP_SHAPE = {
    "area": "Area",
    "perimeter": "Perimeter",
    "eccentricity": "Eccentricity",
    "solidity": "Solidity",
    "extent": "Extent",
    "major_axis_length": "MajorAxisLength",
    "minor_axis_length": "MinorAxisLength",
}
CP_INTENSITY = {
    "integrated": "IntegratedIntensity",
    "mean": "MeanIntensity",
    "std": "StdIntensity",
    "max": "MaxIntensity",
}
CP_TEXTURE = {
    "contrast": "Contrast",
    "homogeneity": "InverseDifferenceMoment",
    "energy": "Energy",
    "correlation": "Correlation",
    "entropy": "Entropy",
}


def _cell_features(channels: list[str], texture_levels: int = 8) -> list[tuple[str, str]]:
    """(our name, CellProfiler's name) of every per-cell feature, in the table's fixed order.
    Texture: distance 1, the horizontal and vertical co-occurrences summed ('avg'), at
    `texture_levels` grey levels; radial: the fraction of intensity in ring k (FracAtD)."""
    pairs = [
        (f"{comp}_{k}", f"{CP_COMPARTMENTS[comp]}_AreaShape_{CP_SHAPE[k]}")
        for comp in ("nucleus", "cell")
        for k in SHAPE
    ]
    for ch in channels:
        pairs += [
            (f"{comp}_{ch}_{s}", f"{CP_COMPARTMENTS[comp]}_Intensity_{CP_INTENSITY[s]}_{ch}")
            for comp in ("nucleus", "cell")
            for s in CP_INTENSITY
        ]
        pairs += [
            (f"cell_{ch}_texture_{k}", f"Cells_Texture_{CP_TEXTURE[k]}_{ch}_1_avg_{texture_levels}") for k in HARALICK
        ]
        pairs += [
            (f"cell_{ch}_radial_{k}", f"Cells_RadialDistribution_FracAtD_{ch}_{k + 1}of{RADIAL_BINS}")
            for k in range(RADIAL_BINS)
        ]
    return pairs


def cell_feature_names(channels: list[str]) -> list[str]:
    """Columns of the per-cell table, in a fixed order (whatever a site's content)."""
    return [ours for ours, _ in _cell_features(channels)]


def site_feature_names(channels: list[str]) -> list[str]:
    return ["n_cells"] + cell_feature_names(channels)


def cellprofiler_names(channels: list[str], texture_levels: int) -> list[str]:
    """`site_feature_names` as CellProfiler names them, in the same order."""
    return ["Image_Count_Cells"] + [cp for _, cp in _cell_features(channels, texture_levels)]


def cytoplasm_image(image: np.ndarray, skip: int) -> np.ndarray:
    """Sum of the non-nuclear channels, each scaled by its 99th percentile so that no bright
    stain dominates where cells end."""
    others = [c for c in range(len(image)) if c != skip] or [skip]
    out = np.zeros(image.shape[1:], np.float32)
    for c in others:
        x = image[c].astype(np.float32)
        out += x / max(float(np.percentile(x, 99)), 1e-6)
    return out


def measure_site(image: np.ndarray, channels: list[str], cfg: FeatureConfig) -> pd.DataFrame:
    """Per-cell features of one site (C, H, W): one row per nucleus, columns cell_feature_names."""
    dna = channels.index(cfg.nuclear_channel)
    x = image.astype(np.float32)
    diameter = cfg.nucleus_diameter or estimate_diameter(x[dna])
    nuclei = segment_nuclei(x[dna], diameter)
    if cfg.flatfield == "radial" and nuclei.max() > 0:
        n = int(nuclei.max())
        index = np.arange(1, n + 1)
        from scipy import ndimage as ndi

        centers = np.asarray(ndi.center_of_mass(np.ones_like(nuclei), nuclei, index))
        means = np.stack([ndi.mean(x[c], nuclei, index) for c in range(len(channels))], axis=1)
        x = x / radial_flatfield(centers, means, x.shape[1:])
        nuclei = segment_nuclei(x[dna], diameter)
    if nuclei.max() == 0:
        return pd.DataFrame(columns=cell_feature_names(channels), dtype=np.float64)
    cells = segment_cells(nuclei, cytoplasm_image(x, dna), diameter)
    df = measure_cells(x, channels, nuclei, cells, levels=cfg.texture_levels, radial_bins=RADIAL_BINS)
    return df


def reduce_site(cells: pd.DataFrame, channels: list[str], statistic: str) -> np.ndarray:
    """One row per site: the cell count, then the per-cell features reduced over cells
    (NaN when the site has no cells)."""
    names = cell_feature_names(channels)
    if len(cells) == 0:
        return np.r_[0.0, np.full(len(names), np.nan)]
    v = cells[names].to_numpy(np.float64)
    red = np.nanmedian(v, axis=0) if statistic == "median" else np.nanmean(v, axis=0)
    return np.r_[float(len(cells)), red]


# --- the store-level job ------------------------------------------------------------

_W: dict = {}


def _init(store_path: str, cfg: FeatureConfig, blank: list[int]) -> None:
    from ..data.store import ImageStore

    store = ImageStore(store_path)
    store.blank_sites = frozenset(blank)
    _W.update(store=store, cfg=cfg)


def _chunk(job: tuple[int, int, int, str]) -> tuple[int, int]:
    import warnings

    from ..chunked import save_chunk

    i, a, b, part = job
    store, cfg = _W["store"], _W["cfg"]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns of cell-less sites
        for s in range(a, b):
            rows.append(reduce_site(measure_site(store.read(s), store.channels, cfg), store.channels, cfg.statistic))
    save_chunk(Path(part), i, np.stack(rows))
    return i, b - a


def extract_features(
    store_path: Path,
    out: Path,
    cfg: FeatureConfig = FeatureConfig(),
    level: str = "well",
    workers: int = 1,
    chunk_sites: int = 64,
    fmt: str = "h5ad",
    overwrite: bool = False,
    progress: bool = True,
    missing: str = "error",
) -> Path:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..chunked import ChunkedJob
    from ..data.profiles import MISSING, apply_missing, write_profiles
    from ..data.store import ImageStore
    from ..parallel import process_map

    if level not in ("site", "well"):
        raise InputError(f"--level: '{level}' is not site or well")
    if fmt not in ("h5ad", "parquet"):
        raise InputError(f"--format: '{fmt}' is not h5ad or parquet")
    if workers < 1:
        raise InputError(f"--workers: must be at least 1, got {workers}")
    if chunk_sites < 1:
        raise InputError(f"--chunk-sites: must be at least 1, got {chunk_sites}")
    if missing not in MISSING:
        raise InputError(f"--missing: '{missing}' is not one of {', '.join(MISSING)}")
    out = Path(out)
    refuse_overlap(out, store_path)
    check_output(out, overwrite)
    store = ImageStore(store_path)
    _ = store.sites  # read now: a damaged site table fails before any work
    cfg.validate(store.channels)
    damaged = apply_missing(store, missing)
    n_sites = len(store)
    names = site_feature_names(store.channels)
    settings = {
        "kind": "hand-crafted features",
        **{k: v for k, v in asdict(cfg).items()},
        "channels": json.dumps(store.channels),
        "level": level,
        "store": str(Path(store_path).resolve()),
        "store_identity": store.identity(),
        "n_sites": n_sites,
        "n_features": len(names),
        "missing": missing,
        **({"damaged_sites": json.dumps(damaged)} if missing != "error" else {}),
    }
    job = ChunkedJob(out, settings, n_sites, chunk_sites)
    todo = [(i, a, b, str(job.part)) for i, a, b in job.todo()]
    cols = (TextColumn("features"), BarColumn(), MofNCompleteColumn(), TextColumn("sites"), TimeRemainingColumn())
    pool = process_map(_chunk, todo, min(workers, max(len(todo), 1)), _init, (str(store_path), cfg, damaged))
    with job.working(), pool as results:
        with Progress(*cols, disable=not progress) as bar:
            task = bar.add_task("features", total=n_sites, completed=n_sites - sum(b - a for _, a, b, _ in todo))
            for _, n in results:
                bar.update(task, advance=n)

    n_empty = fill_cellless_sites(job)
    uns = {
        "provenance": {
            **{k: ("" if v is None else v) for k, v in settings.items()},
            "sites_without_cells": n_empty,
            "morphoscale_version": __version__,
            "time": job.started,
            "determinism": json.dumps(record()),
        }
    }
    write_profiles(
        job,
        store,
        None,
        level,
        uns,
        out,
        fmt,
        var_names=cellprofiler_names(store.channels, cfg.texture_levels),
        skip=damaged if missing == "skip" else None,
    )
    job.finish()
    return out


def fill_cellless_sites(job) -> int:
    """Sites without a single nucleus have no per-cell features: give them each feature's median
    over the other sites (their cell count stays 0), so every row can be aligned and mapped.
    Returns how many sites that was."""
    blocks = [job.load(i) for i in range(len(job.chunks))]
    X = np.concatenate(blocks)
    empty = np.isnan(X[:, 1:]).any(axis=1)
    if not empty.any():
        return 0
    if empty.all():
        raise InputError(
            f"{job.part.name.removesuffix('.partial')}: no nuclei were found on any site (check --nuclear-channel and --nucleus-diameter)"
        )
    fill = np.nanmedian(X, axis=0)
    for i, block in enumerate(blocks):
        holes = np.isnan(block)
        if holes.any():
            block[holes] = np.broadcast_to(fill, block.shape)[holes]
            job.save(i, block)
    return int(empty.sum())
