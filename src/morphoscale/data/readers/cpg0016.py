"""The cpg0016 (JUMP production) metadata joined to a load_data table: plate -> batch, plate
and well -> the perturbation's JCP2022 id, the id -> its modality (compound, CRISPR, ORF), gene
symbol or InChIKey, and whether it is a control (perturbation_control.csv: negcon, poscon,
empty). The tables are those of jump-cellpainting/datasets' metadata/ folder."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from ...errors import InputError, MorphoscaleWarning, Problems
from ..sitetable import SiteColumns, normalize_well
from .base import first_file, read_table

TABLES = {
    "well": "well",
    "plate": "plate",
    "compound": "compound",
    "crispr": "crispr",
    "orf": "orf",
    "control": "perturbation_control",
}
MODALITIES = ("compound", "crispr", "orf")
PERTURBATION_NAMES = ("symbol", "jcp2022")

# The site table read from the joined columns (ingest's defaults in cpg0016 mode).
CPG0016_COLUMNS = SiteColumns(
    plate="Metadata_Plate",
    well="Metadata_Well",
    site="Metadata_Site",
    batch="Metadata_Batch",
    perturbation="Metadata_Perturbation",
    perturbation_type="Metadata_Perturbation_Type",
    default_perturbation_type="compound",
    control_column="Metadata_pert_type",
    control_values=["negcon"],
    positive_control_values=["poscon"],
    optional=[
        "Metadata_Source",
        "Metadata_JCP2022",
        "Metadata_modality",
        "Metadata_pert_type",
        "Metadata_Symbol",
        "Metadata_InChIKey",
        "Metadata_PlateType",
    ],
)


def table_file(folder: Path, stem: str, required: bool) -> Path | None:
    found = first_file(folder, [stem + suffix for suffix in (".csv.gz", ".csv", ".parquet")])
    if found is None and required:
        raise InputError(
            f"{folder}: no {stem}.csv.gz (or .csv, .parquet): not a cpg0016 metadata folder (jump-cellpainting/datasets metadata/)"
        )
    return found


def _table(folder: Path, stem: str, needed: list[str], required: bool = False) -> tuple[pd.DataFrame | None, str]:
    path = table_file(folder, stem, required)
    if path is None:
        return None, ""
    df = read_table(path)
    for col in needed:
        if col not in df.columns:
            raise InputError(f"{path}: missing column '{col}'")
    return df, str(path)


def join_cpg0016(
    raw: pd.DataFrame, folder: Path, columns: SiteColumns, file: str, problems: Problems, perturbation: str = "symbol"
) -> tuple[pd.DataFrame, dict]:
    """The load_data rows (empty wells left out, with a warning) with the Metadata_ columns of
    `CPG0016_COLUMNS`; and, per joined column, the file it came from (for messages).

    `perturbation`: 'symbol' names a CRISPR/ORF well by its gene (what recall reads) and a
    compound by its JCP2022 id; 'jcp2022' names every well by its id."""
    if perturbation not in PERTURBATION_NAMES:
        raise InputError(f"jump_perturbation: '{perturbation}' is not one of {', '.join(PERTURBATION_NAMES)}")
    if not folder.is_dir():
        raise InputError(f"{folder}: the cpg0016 metadata folder is not a folder")
    out, well_file = _join_wells(raw, folder, columns, file, problems)
    plate_file, plate_lines = _join_plates(raw, folder, out)
    ids = out["Metadata_JCP2022"].fillna("")
    _join_modalities(folder, out, ids)
    names, empty = _join_controls(folder, out, ids)
    unknown = (out["Metadata_modality"] == "") & out["Metadata_JCP2022"].notna() & ~empty
    for idx in out.index[unknown]:
        problems.add(
            well_file,
            f"{ids[idx]} (plate {out.at[idx, '_plate']} well {out.at[idx, '_well']}) is in none of the compound, "
            f"crispr, orf tables of {folder}",
            int(out.at[idx, "_line"]),
            "Metadata_JCP2022",
        )
    _name_perturbations(out, ids, names, empty, perturbation, well_file, problems)
    out = out[~empty].drop(columns=["_plate", "_well"])
    lines = pd.to_numeric(out.pop("_line"), errors="coerce")
    joined = {
        c: (well_file, lines)
        for c in (
            "Metadata_JCP2022",
            "Metadata_Perturbation",
            "Metadata_Perturbation_Type",
            "Metadata_pert_type",
            "Metadata_modality",
        )
    }
    if plate_file and "Metadata_Batch" not in raw.columns:
        joined["Metadata_Batch"] = (
            plate_file,
            plate_lines,
        )  # the plate table's line (a plate it lacks: the load_data line)
    return out, joined


def _join_wells(
    raw: pd.DataFrame, folder: Path, columns: SiteColumns, file: str, problems: Problems
) -> tuple[pd.DataFrame, str]:
    """The rows with their well's JCP2022 id (and source) from well.csv.gz, and its line there;
    a well the table lacks is a problem naming it."""
    wells, well_file = _table(
        folder, TABLES["well"], ["Metadata_Plate", "Metadata_Well", "Metadata_JCP2022"], required=True
    )
    out = raw.copy()
    out["_plate"] = out[columns.plate].astype(str).str.strip()
    out["_well"] = out[columns.well].map(normalize_well)
    wells = wells.assign(
        _plate=wells["Metadata_Plate"].str.strip(),
        _well=wells["Metadata_Well"].map(normalize_well),
        _line=wells.index + 2,
    )
    wells = wells[wells["_plate"].isin(set(out["_plate"]))].drop_duplicates(["_plate", "_well"])
    keep = ["_plate", "_well", "_line", "Metadata_JCP2022"] + (
        ["Metadata_Source"] if "Metadata_Source" in wells.columns and "Metadata_Source" not in out.columns else []
    )
    out = out.merge(wells[keep], on=["_plate", "_well"], how="left").set_axis(raw.index)
    for idx in out.index[out["Metadata_JCP2022"].isna()]:
        problems.add(
            file,
            f"plate {out.at[idx, '_plate']} well {raw.at[idx, columns.well]} is not in {well_file}",
            idx + 2,
            columns.well,
        )
    return out, well_file


def _join_plates(raw: pd.DataFrame, folder: Path, out: pd.DataFrame) -> tuple[str | None, pd.Series]:
    """Batch (and plate type) from plate.csv.gz; without it each plate is its own batch.
    Returns the plate table's name and each row's line in it."""
    plates, plate_file = _table(folder, TABLES["plate"], ["Metadata_Plate", "Metadata_Batch"])
    plate_lines = pd.Series(float("nan"), index=out.index)
    if plates is not None:
        info = (
            plates.assign(_plate=plates["Metadata_Plate"].str.strip(), _line=plates.index + 2)
            .drop_duplicates("_plate")
            .set_index("_plate")
        )
        plate_lines = out["_plate"].map(info["_line"]).astype(float)
        for col in ("Metadata_Batch", "Metadata_PlateType"):
            if col in info.columns and col not in raw.columns:
                out[col] = out["_plate"].map(info[col])
    if "Metadata_Batch" not in out.columns:
        out["Metadata_Batch"] = out["_plate"]  # no plate table: each plate its own batch
    return plate_file, plate_lines


def _join_modalities(folder: Path, out: pd.DataFrame, ids: pd.Series) -> None:
    """Metadata_modality (the first table holding the id), Metadata_Symbol and _InChIKey."""
    out["Metadata_modality"] = ""
    for modality in MODALITIES:
        table, _ = _table(folder, modality, ["Metadata_JCP2022"])
        if table is None:
            continue
        table = table.drop_duplicates("Metadata_JCP2022").set_index("Metadata_JCP2022")
        hit = ids.isin(table.index) & (out["Metadata_modality"] == "")
        out.loc[hit, "Metadata_modality"] = modality
        for col in ("Metadata_Symbol", "Metadata_InChIKey"):
            if col in table.columns:
                out.loc[hit, col] = ids[hit].map(table[col])
    for col in ("Metadata_Symbol", "Metadata_InChIKey"):
        out[col] = out[col].fillna("") if col in out.columns else ""


def _join_controls(folder: Path, out: pd.DataFrame, ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Metadata_pert_type from perturbation_control (trt for the rest); returns each control's
    name (DMSO, non-targeting, ...) and which rows are empty wells (warned about)."""
    control, control_file = _table(folder, TABLES["control"], ["Metadata_JCP2022", "Metadata_pert_type"])
    names = pd.Series("", index=out.index)
    out["Metadata_pert_type"] = "trt"
    if control is not None:
        ctl = control.drop_duplicates("Metadata_JCP2022").set_index("Metadata_JCP2022")
        is_listed = ids.isin(ctl.index)
        out.loc[is_listed, "Metadata_pert_type"] = ids[is_listed].map(ctl["Metadata_pert_type"]).str.strip().str.lower()
        if "Metadata_Name" in ctl.columns:
            names[is_listed] = ids[is_listed].map(ctl["Metadata_Name"])
    empty = out["Metadata_pert_type"] == "empty"
    if empty.any():
        warnings.warn(
            f"{int(empty.sum())} of {len(out)} sites are empty wells ({control_file}: Metadata_pert_type empty); left out of the store",
            MorphoscaleWarning,
            stacklevel=3,
        )
    return names, empty


def _name_perturbations(
    out: pd.DataFrame,
    ids: pd.Series,
    names: pd.Series,
    empty: pd.Series,
    perturbation: str,
    well_file: str,
    problems: Problems,
) -> None:
    """Metadata_Perturbation (gene symbol, JCP2022 id or control name) and its type; a gene
    that is both CRISPR and ORF is a problem when wells are named by gene."""
    sym = out["Metadata_Symbol"].astype(str)
    gene = out["Metadata_modality"].isin(["crispr", "orf"])
    name = ids.where(~(gene & (sym != "")) | (perturbation == "jcp2022"), sym)
    out["Metadata_Perturbation"] = name.where((names == "") | ~out["Metadata_pert_type"].eq("negcon"), names)
    out["Metadata_Perturbation_Type"] = out["Metadata_modality"].where(out["Metadata_pert_type"] != "negcon", "negcon")
    if perturbation == "symbol":
        both = out[gene & ~empty].groupby("Metadata_Perturbation")["Metadata_modality"].nunique()
        for g in both.index[both > 1][:5]:
            problems.add(
                well_file,
                f"gene {g} is both a CRISPR and an ORF perturbation here: their profiles would be averaged; ingest "
                "the modalities separately or set jump_perturbation: jcp2022",
            )
