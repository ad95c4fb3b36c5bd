"""The site table: one row per imaging site, the contract every stage reads.

Readers turn their source's metadata into this table through `build_site_table`,
which checks every row and reports all problems at once.
"""

from __future__ import annotations

import re
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from ..errors import Problems

REQUIRED_COLUMNS = ["plate", "well", "site", "batch", "perturbation", "perturbation_type", "is_control"]
PERTURBATION_TYPES = ("gene", "compound", "control")
SITE_KEY = ["plate", "well", "site"]
PATH_PREFIX = "path_"

_WELL = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,2})$")


class SiteColumns(BaseModel):
    """Which source columns fill the site table, and which values mark controls."""

    model_config = ConfigDict(extra="forbid")

    plate: str = "plate"
    well: str = "well"
    site: str = "site"
    batch: str = "batch"
    perturbation: str = "perturbation"
    # Column holding gene|compound|control; when absent every non-control row
    # gets `default_perturbation_type`.
    perturbation_type: str | None = "perturbation_type"
    default_perturbation_type: Literal["gene", "compound"] = "gene"
    # A row is a control when `control_column` (default: the perturbation column)
    # holds one of `control_values`. Every listed value must occur in the table.
    control_column: str | None = None
    control_values: list[str] = ["non-targeting"]
    # Optional columns carried over when present.
    optional: list[str] = ["concentration", "cell_type", "guide"]


def normalize_well(value) -> str | None:
    """'b2', 'B02', 'B002' -> 'B02'; None when it is not a well name of a 96/384/1536 plate."""
    m = _WELL.match(str(value).strip())
    if not m:
        return None
    row, col = m.group(1).upper(), int(m.group(2))
    if len(row) == 2 and not ("AA" <= row <= "AF"):
        return None
    if not 1 <= col <= 48:
        return None
    return f"{row}{col:02d}"


def site_id(plate, well, site) -> str:
    return f"{plate}_{well}_{site}"


def build_site_table(
    raw: pd.DataFrame,
    columns: SiteColumns,
    file: str,
    problems: Problems,
    channel_paths: dict[str, pd.Series] | None = None,
    require_controls: bool = True,
    line_of_row: pd.Series | None = None,
) -> pd.DataFrame:
    """Map `raw` onto the site-table contract, adding every problem found to `problems`.

    `line_of_row` gives, per row of `raw`, the line of `file` it came from (for
    messages); by default row i is line i + 2 (a header line, then data).
    """
    if line_of_row is None:
        line_of_row = pd.Series(range(2, len(raw) + 2), index=raw.index)
    control_column = columns.control_column or columns.perturbation
    needed = {
        "plate": columns.plate,
        "well": columns.well,
        "site": columns.site,
        "batch": columns.batch,
        "perturbation": columns.perturbation,
        "control": control_column,
    }
    missing = [src for src in dict.fromkeys(needed.values()) if src not in raw.columns]
    for src in missing:
        problems.add(file, f"missing column '{src}' (have: {', '.join(map(str, raw.columns))})")
    if missing:
        return pd.DataFrame(columns=REQUIRED_COLUMNS)

    out = pd.DataFrame(index=raw.index)
    for key in ("plate", "batch", "perturbation"):
        out[key] = raw[needed[key]].astype("string").str.strip()
        for idx in out.index[out[key].isna() | (out[key] == "")]:
            problems.add(file, "empty value", int(line_of_row[idx]), needed[key])

    wells = raw[columns.well].map(normalize_well)
    for idx in wells.index[wells.isna()]:
        problems.add(file, f"'{raw.at[idx, columns.well]}' is not a well name like B02", int(line_of_row[idx]), columns.well)
    out["well"] = wells

    sites = pd.to_numeric(raw[columns.site], errors="coerce")
    bad = sites.isna() | (sites % 1 != 0) | (sites < 0)
    for idx in sites.index[bad]:
        problems.add(file, f"'{raw.at[idx, columns.site]}' is not a site number", int(line_of_row[idx]), columns.site)
    out["site"] = sites.where(~bad, -1).astype("int64")

    control_values = [str(v) for v in columns.control_values]
    control_col = raw[control_column].astype("string").str.strip()
    present = set(control_col.dropna())
    for value in control_values if require_controls else ():
        if value not in present:
            problems.add(file, f"unknown control label '{value}': no row has it", column=control_column)
    out["is_control"] = control_col.isin(control_values).fillna(False).astype(bool)

    if columns.perturbation_type and columns.perturbation_type in raw.columns:
        ptype = raw[columns.perturbation_type].astype("string").str.strip().str.lower()
        for idx in ptype.index[~ptype.isin(PERTURBATION_TYPES)]:
            problems.add(
                file,
                f"'{raw.at[idx, columns.perturbation_type]}' is not one of {', '.join(PERTURBATION_TYPES)}",
                int(line_of_row[idx]),
                columns.perturbation_type,
            )
    else:
        ptype = pd.Series(columns.default_perturbation_type, index=raw.index, dtype="string")
    ptype = ptype.where(~out["is_control"], "control")
    for idx in ptype.index[(ptype == "control") & ~out["is_control"]]:
        problems.add(file, "perturbation_type is 'control' but the row is not a control well", int(line_of_row[idx]), columns.perturbation_type)
    out["perturbation_type"] = ptype

    for col in columns.optional:
        if col in raw.columns:
            out[col] = raw[col]

    # Duplicate site keys: name every line involved.
    key = out[SITE_KEY]
    dup = key.duplicated(keep=False) & out["well"].notna()
    if dup.any():
        for _, grp in key[dup].groupby(SITE_KEY, sort=False):
            lines = ", ".join(str(int(line_of_row[i])) for i in grp.index)
            first = grp.index[0]
            problems.add(file, f"duplicate site {site_id(*grp.loc[first])} on lines {lines}", int(line_of_row[grp.index[1]]))

    if require_controls:
        has_control = out.groupby("batch", dropna=True)["is_control"].any()
        for batch in has_control.index[~has_control]:
            problems.add(file, f"batch '{batch}' has no control wells (controls: {', '.join(control_values)})", column=columns.batch)

    out.insert(0, "site_id", [site_id(p, w, s) for p, w, s in zip(out["plate"], out["well"], out["site"])])
    out = out[["site_id"] + REQUIRED_COLUMNS + [c for c in out.columns if c not in REQUIRED_COLUMNS and c != "site_id"]]
    if channel_paths:
        for ch, paths in channel_paths.items():
            out[PATH_PREFIX + ch] = paths.astype(str)
    return out.reset_index(drop=True)


def channel_path_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(PATH_PREFIX)]


def metadata_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if not c.startswith(PATH_PREFIX)]
