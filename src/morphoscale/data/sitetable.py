"""The site table: one row per imaging site, the contract every stage reads.

Readers turn their source's metadata into this table through `build_site_table`,
which checks every row and reports all problems at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
    "gene": "gene",
    "crispr": "gene",
    "orf": "gene",
    "sirna": "gene",
    "compound": "compound",
    "control": "control",
    "negcon": "control",
    "negative_control": "control",
    "trt": None,
    "treatment": None,
    "poscon": None,
    "positive_control": None,
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


@dataclass
class _Source:
    """The raw table being mapped, and where each of its values came from (for messages)."""

    raw: pd.DataFrame
    columns: SiteColumns
    file: str
    problems: Problems
    line_of_row: pd.Series
    joined: dict[str, tuple[str, pd.Series]]

    def origin(self, col) -> tuple[str, pd.Series]:
        """(file, line per row) of a column: the platemap it was joined from, or the table."""
        if col in self.joined:
            src, lines = self.joined[col]
            return src, lines.fillna(self.line_of_row)
        return self.file, self.line_of_row

    def line(self, idx) -> int:
        return int(self.line_of_row[idx])


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
    s = _Source(raw, columns, file, problems, line_of_row, joined or {})
    needed = _needed_columns(s)
    if needed is None:
        return pd.DataFrame(columns=REQUIRED_COLUMNS)
    out = pd.DataFrame(index=raw.index)
    for key in ("plate", "batch", "perturbation"):
        out[key] = _text_column(s, needed[key])
    out["well"] = _wells(s)
    out["site"] = _sites(s)
    _controls(s, out, needed["control"], require_controls)
    out["perturbation_type"] = _perturbation_types(s, out["is_control"])
    for col in columns.optional:
        if col in raw.columns:
            out[col] = raw[col]
    _check_duplicates(s, out)
    if require_controls:
        has_control = out.groupby("batch", dropna=True)["is_control"].any()
        for batch in has_control.index[~has_control]:
            problems.add(
                file,
                f"batch '{batch}' has no control wells (controls: {', '.join(map(str, columns.control_values))})",
                column=columns.batch,
            )
    out.insert(0, "site_id", [site_id(p, w, n) for p, w, n in zip(out["plate"], out["well"], out["site"])])
    out = out[["site_id"] + REQUIRED_COLUMNS + [c for c in out.columns if c not in REQUIRED_COLUMNS and c != "site_id"]]
    for ch, paths in (channel_paths or {}).items():
        out[PATH_PREFIX + ch] = paths.astype(str)
    return out.reset_index(drop=True)


def _needed_columns(s: _Source) -> dict[str, str] | None:
    """Site-table key -> source column; None (every missing one a problem) when any is absent."""
    c = s.columns
    needed = {
        "plate": c.plate,
        "well": c.well,
        "site": c.site or c.well,
        "batch": c.batch,
        "perturbation": c.perturbation,
        "control": c.control_column or c.perturbation,
    }
    missing = [src for src in dict.fromkeys(needed.values()) if src not in s.raw.columns]
    elsewhere = sorted({f for f, _ in s.joined.values()})
    for src in missing:
        where = f" in {s.file} or {', '.join(elsewhere)}" if elsewhere else ""
        s.problems.add(s.file, f"missing column '{src}'{where} (have: {', '.join(map(str, s.raw.columns))})")
    return None if missing else needed


def _text_column(s: _Source, col: str) -> pd.Series:
    """A required text column, stripped; an empty value is a problem named by its file and line."""
    values = s.raw[col].astype("string").str.strip()
    src, lines = s.origin(col)
    for idx in values.index[values.isna() | (values == "")]:
        s.problems.add(src, "empty value", int(lines[idx]), col)
    return values


def _wells(s: _Source) -> pd.Series:
    col = s.columns.well
    wells = s.raw[col].map(normalize_well)
    for idx in wells.index[wells.isna()]:
        s.problems.add(s.file, f"'{s.raw.at[idx, col]}' is not a well name like B02", s.line(idx), col)
    return wells


def _sites(s: _Source) -> pd.Series:
    """Site numbers (whole, not negative); 1 for a source with one site per well."""
    col = s.columns.site
    sites = pd.to_numeric(s.raw[col], errors="coerce") if col else pd.Series(1, index=s.raw.index)
    bad = sites.isna() | (sites % 1 != 0) | (sites < 0)
    for idx in sites.index[bad]:
        s.problems.add(s.file, f"'{s.raw.at[idx, col]}' is not a site number", s.line(idx), col)
    return sites.where(~bad, -1).astype("int64")


def _controls(s: _Source, out: pd.DataFrame, control_column: str, require_controls: bool) -> None:
    """is_control (and control_type where positive controls are named); every control label
    asked for must occur."""
    control_values = [str(v) for v in s.columns.control_values]
    control_col = s.raw[control_column].astype("string").str.strip()
    present = set(control_col.dropna())
    for value in control_values if require_controls else ():
        if value not in present:
            s.problems.add(
                s.origin(control_column)[0], f"unknown control label '{value}': no row has it", column=control_column
            )
    out["is_control"] = control_col.isin(control_values).fillna(False).astype(bool)
    if s.columns.positive_control_values:
        poscon = control_col.isin([str(v) for v in s.columns.positive_control_values]).fillna(False).to_numpy(bool)
        out["control_type"] = np.where(out["is_control"], "negcon", np.where(poscon, "poscon", "trt"))


def _perturbation_types(s: _Source, is_control: pd.Series) -> pd.Series:
    """gene | compound | control per row, read through TYPE_ALIASES; a control type on a row
    that is not a control well is a problem."""
    c = s.columns
    if c.perturbation_type and c.perturbation_type in s.raw.columns:
        src, lines = s.origin(c.perturbation_type)
        given = s.raw[c.perturbation_type].astype("string").str.strip().str.lower()
        ptype = given.map(TYPE_ALIASES).astype("string")
        ptype = ptype.where(given != "", c.default_perturbation_type).fillna(c.default_perturbation_type)
        known = (
            f"{', '.join(PERTURBATION_TYPES)}, or {', '.join(k for k in TYPE_ALIASES if k not in PERTURBATION_TYPES)}"
        )
        for idx in given.index[~given.isin(list(TYPE_ALIASES)) & (given != "")]:
            s.problems.add(
                src,
                f"'{s.raw.at[idx, c.perturbation_type]}' is not a perturbation type ({known})",
                int(lines[idx]),
                c.perturbation_type,
            )
    else:
        src, lines = s.file, s.line_of_row
        ptype = pd.Series(c.default_perturbation_type, index=s.raw.index, dtype="string")
    controls = ", ".join(map(str, c.control_values))
    for idx in ptype.index[(ptype == "control") & ~is_control]:
        s.problems.add(
            src,
            f"perturbation_type is '{s.raw.at[idx, c.perturbation_type]}' (a control) but the row is not a control "
            f"well (controls: {controls})",
            int(lines[idx]),
            c.perturbation_type,
        )
    return ptype.where(~is_control, "control")


def _check_duplicates(s: _Source, out: pd.DataFrame) -> None:
    """Duplicate site keys: name every line involved."""
    key = out[SITE_KEY]
    dup = key.duplicated(keep=False) & out["well"].notna()
    for _, grp in key[dup].groupby(SITE_KEY, sort=False):
        lines = ", ".join(str(s.line(i)) for i in grp.index)
        s.problems.add(
            s.file, f"duplicate site {site_id(*grp.loc[grp.index[0]])} on lines {lines}", s.line(grp.index[1])
        )


def channel_path_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(PATH_PREFIX)]


def metadata_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if not c.startswith(PATH_PREFIX)]
