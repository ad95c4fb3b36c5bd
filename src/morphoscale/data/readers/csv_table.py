"""Generic CSV: one row per site, one image-path column per channel, metadata columns named in config."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import InputError, Problems
from ..sitetable import SiteColumns, build_site_table
from .base import SourceTable, locate, read_table


def read_csv_source(
    source: Path,
    channel_columns: dict[str, str],
    columns: SiteColumns | None = None,
    require_controls: bool = True,
    problems: Problems | None = None,
    path_map: dict[str, str] | None = None,
) -> SourceTable:
    """`channel_columns` maps channel name -> path column, in channel order; relative paths are relative to the CSV."""
    source = Path(source)
    if not channel_columns:
        raise InputError(
            f"{source}: the csv format needs 'channel_columns' (channel name -> path column) in the config"
        )
    raw = read_table(source)
    columns = columns or SiteColumns()
    problems = problems if problems is not None else Problems()
    for ch, col in channel_columns.items():
        if col not in raw.columns:
            problems.add(source, f"missing path column '{col}' for channel {ch}")
    if len(problems):
        problems.raise_if_any()
    paths = {}
    for ch, col in channel_columns.items():
        vals = raw[col].str.strip()
        for idx in vals.index[vals == ""]:
            problems.add(source, f"no image path for channel {ch}", idx + 2, col)
        paths[ch] = pd.Series([str(locate(p, source.parent, path_map)) if p else "" for p in vals], index=raw.index)
    sites = build_site_table(raw, columns, str(source), problems, paths, require_controls)
    return SourceTable(sites, list(channel_columns), str(source))
