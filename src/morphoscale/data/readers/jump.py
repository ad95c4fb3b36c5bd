"""JUMP / Cell Painting Gallery layout: a CellProfiler load_data table (csv, csv.gz or parquet)
joined to a platemap (the pilot) or to the cpg0016 metadata tables (`cpg0016.py`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import InputError, Problems
from ..sitetable import SiteColumns, build_site_table, normalize_well
from .base import ILLUM_PREFIX, SourceTable, first_file, locate, read_table
from .cpg0016 import join_cpg0016

JUMP_CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]
LOAD_DATA_NAMES = (
    "load_data_with_illum.parquet",
    "load_data_with_illum.csv.gz",
    "load_data_with_illum.csv",
    "load_data.parquet",
    "load_data.csv.gz",
    "load_data.csv",
)

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
    path_map: dict[str, str] | None = None,
    illum: bool = True,
    metadata: Path | None = None,
    perturbation: str = "symbol",
) -> SourceTable:
    """`source` is the load_data table, or a folder holding one (`LOAD_DATA_NAMES`, and
    `platemap.csv`). `metadata`: the cpg0016 metadata folder (jump-cellpainting/datasets'
    metadata/), joined instead of a platemap. With `illum`, the `FileName_Illum<CH>` /
    `PathName_Illum<CH>` functions become `illum_<CH>` columns that ingest divides by."""
    source = Path(source)
    load_data = _load_data_file(source)
    folder = load_data.parent
    raw = read_table(load_data)
    channels = list(channels or JUMP_CHANNELS)
    columns = columns or JUMP_COLUMNS
    problems = problems if problems is not None else Problems()
    file = str(load_data)

    _check_columns(raw, channels, columns, file, problems)

    paths = {ch: _paths(raw, "Orig" + ch, folder, path_map) for ch in channels}
    illums = {
        ch: _paths(raw, "Illum" + ch, folder, path_map)
        for ch in channels
        if illum and "FileName_Illum" + ch in raw.columns
    }

    if metadata is not None:
        if platemap is not None:
            raise InputError(
                f"{platemap}: give a platemap (the pilot) or the cpg0016 metadata folder (--jump-metadata), not both"
            )
        raw, joined = join_cpg0016(raw, Path(metadata), columns, file, problems, perturbation)
    else:
        platemap = platemap or (folder / "platemap.csv" if (folder / "platemap.csv").exists() else None)
        wells = (platemap_well_column, platemap_plate_column)
        raw, joined = _join_platemap(raw, Path(platemap), columns, *wells, problems, file) if platemap else (raw, {})
    keep = raw.index  # the cpg0016 join leaves out empty wells
    sites = build_site_table(
        raw,
        columns,
        file,
        problems,
        {ch: p.loc[keep] for ch, p in paths.items()},
        require_controls,
        line_of_row=pd.Series(keep + 2, index=keep),
        joined=joined,
    )
    for ch, p in illums.items():
        sites[ILLUM_PREFIX + ch] = p.loc[keep].to_numpy()
    table = SourceTable(sites, channels, str(load_data))
    table.illumination = _illumination_note(channels, illums, illum, raw)
    return table


def _check_columns(raw: pd.DataFrame, channels: list[str], columns: SiteColumns, file: str, problems: Problems) -> None:
    """Every channel's FileName_/PathName_Orig columns and the site's plate, well and site."""
    for ch in channels:
        for prefix in ("FileName_Orig", "PathName_Orig"):
            if prefix + ch not in raw.columns:
                have = sorted(c[len("FileName_Orig") :] for c in raw.columns if c.startswith("FileName_Orig"))
                problems.add(
                    file, f"missing column '{prefix}{ch}' for channel {ch} (channels here: {', '.join(have) or 'none'})"
                )
    for col in (columns.plate, columns.well, columns.site):
        if col not in raw.columns:
            problems.add(file, f"missing column '{col}'")
    if len(problems):
        problems.raise_if_any()


def _load_data_file(source: Path) -> Path:
    if not source.is_dir():
        return source
    if found := first_file(source, LOAD_DATA_NAMES):
        return found
    raise InputError(f"{source}: no load_data table in the folder (looked for {', '.join(LOAD_DATA_NAMES)})")


def _paths(raw: pd.DataFrame, kind: str, folder: Path, path_map) -> pd.Series:
    """`PathName_<kind>` / `FileName_<kind>` joined, mapped to local paths."""
    dirs = (
        raw["PathName_" + kind].astype(str).str.strip()
        if "PathName_" + kind in raw.columns
        else pd.Series("", index=raw.index)
    )
    names = raw["FileName_" + kind].astype(str).str.strip()
    return pd.Series(
        [str(locate(d.rstrip("/") + "/" + n if d else n, folder, path_map)) for d, n in zip(dirs, names)],
        index=raw.index,
    )


def _illumination_note(channels, illums: dict, illum: bool, raw) -> dict:
    """What the store's attrs say about illumination correction."""
    offered = [ch for ch in channels if "FileName_Illum" + ch in raw.columns]
    if not offered:
        return {"applied": False, "why": "the load_data table has no FileName_Illum columns"}
    if not illum:
        return {"applied": False, "why": "--no-illum (illum: false)", "offered": offered}
    return {
        "applied": True,
        "channels": sorted(illums),
        "how": "raw / illumination function (CellProfiler CorrectIlluminationApply, Divide), rounded to the source's "
        "integer type, then scaled",
    }


def _join_platemap(
    raw, platemap: Path, columns, well_col, plate_col, problems: Problems, file: str
) -> tuple[pd.DataFrame, dict]:
    """The load_data rows with the platemap's columns; and, per joined column, the platemap and
    the line each row's value came from (for messages)."""
    pm = read_table(platemap)
    if well_col not in pm.columns:
        raise InputError(
            f"{platemap}: missing column '{well_col}' (the platemap's well column; --platemap-well-column)"
        )
    pm = pm.copy()
    pm["_well"] = pm[well_col].map(normalize_well)
    pm["_line"] = pm.index + 2
    keys = ["_well"] + ([plate_col] if plate_col else [])
    if plate_col and plate_col not in pm.columns:
        raise InputError(
            f"{platemap}: missing column '{plate_col}' (the platemap's plate column; --platemap-plate-column)"
        )
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
            problems.add(
                file, f"well {raw.at[idx, columns.well]} is not in the platemap {platemap.name}", idx + 2, columns.well
            )
    lines = pd.to_numeric(merged["_line"], errors="coerce")
    joined = {c: (str(platemap), lines) for c in pm.columns if c not in keys and c != "_line"}
    return merged.drop(columns=["_merge", "_well", "_line"]).fillna(""), joined
