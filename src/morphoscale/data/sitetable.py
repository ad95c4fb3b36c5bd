"""The site table: one row per imaging site, the contract every stage reads.

Readers turn their source's metadata into this table through `build_site_table`,
which checks every row and reports all problems at once.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from ..errors import Problems

REQUIRED_COLUMNS = ["plate", "well", "site", "batch", "perturbation", "perturbation_type", "is_control"]
PERTURBATION_TYPES = ("gene", "compound", "control")
# How the field's screens spell a perturbation type (RxRx3-core CRISPR/COMPOUND, JUMP's
# Metadata_pert_type negcon/poscon/trt, RxRx1 siRNA): None = the row's default type (a
# treatment or positive control is a gene or a compound by the screen, not by the label).
TYPE_ALIASES = {
    "gene": "gene", "crispr": "gene", "orf": "gene", "sirna": "gene", "compound": "compound", "control": "control",
    "negcon": "control", "negative_control": "control", "trt": None, "treatment": None, "poscon": None, "positive_control": None,
}
SITE_KEY = ["plate", "well", "site"]
PATH_PREFIX = "path_"

_WELL = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,2})$")


class SiteColumns(BaseModel):
    """Which source columns fill the site table, and which values mark controls."""

    model_config = ConfigDict(extra="forbid")

    plate: str = "plate"
    well: str = "well"
    # None: one site per well (RxRx3-core), numbered 1.
    site: str | None = "site"
    # rxrx only: the column naming the experiment folder the images are in.
    experiment: str | None = None
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
    # Values of the control column that mark a positive control: such rows keep their
    # perturbation and type, and the site table's `control_type` says poscon (negcon for
    # controls, trt for the rest).
    positive_control_values: list[str] = []
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
    joined: dict[str, tuple[str, pd.Series]] | None = None,
) -> pd.DataFrame:
    """Map `raw` onto the site-table contract, adding every problem found to `problems`.

    `line_of_row` gives, per row of `raw`, the line of `file` it came from (for
    messages); by default row i is line i + 2 (a header line, then data). `joined` names,
    for columns joined in from another file (a platemap), that file and its line per row,
    so that a problem with such a column names the file that holds it.
    """
    if line_of_row is None:
        line_of_row = pd.Series(range(2, len(raw) + 2), index=raw.index)
    joined = joined or {}

    def origin(col) -> tuple[str, pd.Series]:
        if col in joined:
            src, lines = joined[col]
            return src, lines.fillna(line_of_row)
        return file, line_of_row
    control_column = columns.control_column or columns.perturbation
    needed = {
        "plate": columns.plate,
        "well": columns.well,
        "site": columns.site or columns.well,
        "batch": columns.batch,
        "perturbation": columns.perturbation,
        "control": control_column,
    }
    missing = [src for src in dict.fromkeys(needed.values()) if src not in raw.columns]
    elsewhere = sorted({f for f, _ in joined.values()})
    for src in missing:
        where = f" in {file} or {', '.join(elsewhere)}" if elsewhere else ""
        problems.add(file, f"missing column '{src}'{where} (have: {', '.join(map(str, raw.columns))})")
    if missing:
        return pd.DataFrame(columns=REQUIRED_COLUMNS)

    out = pd.DataFrame(index=raw.index)
    for key in ("plate", "batch", "perturbation"):
        out[key] = raw[needed[key]].astype("string").str.strip()
        src, lines = origin(needed[key])
        for idx in out.index[out[key].isna() | (out[key] == "")]:
            problems.add(src, "empty value", int(lines[idx]), needed[key])

    wells = raw[columns.well].map(normalize_well)
    for idx in wells.index[wells.isna()]:
        problems.add(file, f"'{raw.at[idx, columns.well]}' is not a well name like B02", int(line_of_row[idx]), columns.well)
    out["well"] = wells

    sites = pd.to_numeric(raw[columns.site], errors="coerce") if columns.site else pd.Series(1, index=raw.index)
    bad = sites.isna() | (sites % 1 != 0) | (sites < 0)
    for idx in sites.index[bad]:
        problems.add(file, f"'{raw.at[idx, columns.site]}' is not a site number", int(line_of_row[idx]), columns.site)
    out["site"] = sites.where(~bad, -1).astype("int64")

    control_values = [str(v) for v in columns.control_values]
    control_col = raw[control_column].astype("string").str.strip()
    present = set(control_col.dropna())
    for value in control_values if require_controls else ():
        if value not in present:
            problems.add(origin(control_column)[0], f"unknown control label '{value}': no row has it", column=control_column)
    out["is_control"] = control_col.isin(control_values).fillna(False).astype(bool)
    if columns.positive_control_values:
        poscon = control_col.isin([str(v) for v in columns.positive_control_values]).fillna(False).to_numpy(bool)
        out["control_type"] = np.where(out["is_control"], "negcon", np.where(poscon, "poscon", "trt"))

    if columns.perturbation_type and columns.perturbation_type in raw.columns:
        src, lines = origin(columns.perturbation_type)
        given = raw[columns.perturbation_type].astype("string").str.strip().str.lower()
        ptype = given.map(TYPE_ALIASES).astype("string")
        ptype = ptype.where(given != "", columns.default_perturbation_type).fillna(columns.default_perturbation_type)
        for idx in given.index[~given.isin(list(TYPE_ALIASES)) & (given != "")]:
            problems.add(
                src,
                f"'{raw.at[idx, columns.perturbation_type]}' is not a perturbation type ({', '.join(PERTURBATION_TYPES)}, or {', '.join(k for k in TYPE_ALIASES if k not in PERTURBATION_TYPES)})",
                int(lines[idx]),
                columns.perturbation_type,
            )
    else:
        src, lines = file, line_of_row
        ptype = pd.Series(columns.default_perturbation_type, index=raw.index, dtype="string")
    for idx in ptype.index[(ptype == "control") & ~out["is_control"]]:
        problems.add(src, f"perturbation_type is '{raw.at[idx, columns.perturbation_type]}' (a control) but the row is not a control well (controls: {', '.join(control_values)})", int(lines[idx]), columns.perturbation_type)
    ptype = ptype.where(~out["is_control"], "control")
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
