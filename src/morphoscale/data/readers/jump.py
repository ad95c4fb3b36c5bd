"""JUMP / Cell Painting Gallery layout: a CellProfiler load_data CSV joined to a platemap."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import InputError, Problems
from ..sitetable import SiteColumns, build_site_table, normalize_well
from .base import SourceTable, read_table

JUMP_CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]

JUMP_COLUMNS = SiteColumns(
    plate="Metadata_Plate",
    well="Metadata_Well",
    site="Metadata_Site",
    batch="Metadata_Plate",
    perturbation="broad_sample",
    perturbation_type="perturbation_type",
    default_perturbation_type="compound",
    control_values=["DMSO"],
)


def read_jump(
    source: Path,
    channels: list[str] | None = None,
    columns: SiteColumns | None = None,
    require_controls: bool = True,
    problems: Problems | None = None,
    platemap: Path | None = None,
    platemap_well_column: str = "well_position",
    platemap_plate_column: str | None = None,
) -> SourceTable:
    """`source` is the load_data CSV, or a folder holding `load_data.csv` (and `platemap.csv`)."""
    source = Path(source)
    load_data = source / "load_data.csv" if source.is_dir() else source
    folder = load_data.parent
    raw = read_table(load_data)
    channels = list(channels or JUMP_CHANNELS)
    columns = columns or JUMP_COLUMNS
    problems = problems if problems is not None else Problems()
    file = str(load_data)

    for ch in channels:
        for prefix in ("FileName_Orig", "PathName_Orig"):
            if prefix + ch not in raw.columns:
                problems.add(file, f"missing column '{prefix}{ch}' for channel {ch}")
    for col in (columns.plate, columns.well, columns.site):
        if col not in raw.columns:
            problems.add(file, f"missing column '{col}'")
    if len(problems):
        problems.raise_if_any()

    paths = {}
    for ch in channels:
        dirs = raw["PathName_Orig" + ch].str.strip()
        names = raw["FileName_Orig" + ch].str.strip()
        paths[ch] = pd.Series([str(_resolve(folder, d) / n) for d, n in zip(dirs, names)], index=raw.index)

    if platemap is None and (folder / "platemap.csv").exists():
        platemap = folder / "platemap.csv"
    if platemap is not None:
        raw = _join_platemap(raw, Path(platemap), columns, platemap_well_column, platemap_plate_column, problems, file)
    sites = build_site_table(raw, columns, file, problems, paths, require_controls)
    return SourceTable(sites, channels, str(load_data))


def _resolve(folder: Path, d: str) -> Path:
    if d.startswith(("s3://", "gs://", "http://", "https://")):
        raise InputError(f"{d}: remote image paths are not supported; download the images and point PathName_Orig* at them")
    p = Path(d)
    return p if p.is_absolute() else folder / p


def _join_platemap(raw, platemap: Path, columns, well_col, plate_col, problems: Problems, file: str) -> pd.DataFrame:
    pm = read_table(platemap)
    if well_col not in pm.columns:
        raise InputError(f"{platemap}: missing column '{well_col}' (the platemap's well column)")
    pm = pm.copy()
    pm["_well"] = pm[well_col].map(normalize_well)
    keys = ["_well"] + ([plate_col] if plate_col else [])
    if plate_col and plate_col not in pm.columns:
        raise InputError(f"{platemap}: missing column '{plate_col}' (the platemap's plate column)")
    dup = pm.duplicated(keys, keep="first")
    for idx in pm.index[dup]:
        problems.add(platemap, f"well {pm.at[idx, well_col]} appears more than once", idx + 2, well_col)
    pm = pm[~dup].drop(columns=[c for c in pm.columns if c in raw.columns and c not in keys])
    left = raw.copy()
    left["_well"] = left[columns.well].map(normalize_well)
    if plate_col:
        left[plate_col] = left[columns.plate]
    merged = left.merge(pm, on=keys, how="left", indicator=True)
    merged.index = raw.index
    for idx in merged.index[merged["_merge"] == "left_only"]:
        if merged.at[idx, "_well"] is not None:
            problems.add(file, f"well {raw.at[idx, columns.well]} is not in the platemap {platemap.name}", idx + 2, columns.well)
    return merged.drop(columns=["_merge", "_well"]).fillna("")
