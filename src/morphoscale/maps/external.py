"""Embeddings made elsewhere, read into the embeddings contract `map` takes (DESIGN.md):
the published RxRx3-core embeddings (OpenPhenom's, with their metadata CSV), JUMP profiles
(cpg0016 parquet: `Metadata_*` columns beside the features), or any table whose column roles
the user names.

A layout says which column plays which role; `--column ROLE=NAME` overrides any of them:
perturbation, type (perturbation type), control (the column whose value `--control` marks
a negative-control well; default: the type column), batch, plate, well, concentration, id
(the key joining a separate metadata file). Feature columns: the layout's prefix
(`feature_` for RxRx3-core), else every numeric column that is not metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, why

ROLES = ("perturbation", "type", "control", "batch", "plate", "well", "concentration", "id")
TYPES = {"crispr": "gene", "gene": "gene", "orf": "gene", "sirna": "gene", "compound": "compound", "control": "control"}


@dataclass
class Layout:
    name: str
    columns: dict[str, str]  # role -> column
    control_values: tuple[str, ...]  # values of the control column that mark a negative-control well
    feature_prefix: str | None = None
    drop_other_controls: bool = False  # rows whose perturbation names a control but are not the negative control
    notes: list[str] = field(default_factory=list)


def rxrx3_core() -> Layout:
    """OpenPhenom_rxrx3_core_embeddings.parquet (well_id, feature_0..) + metadata_rxrx3_core.csv
    (well_id, experiment_name, plate, address, gene, treatment, SMILES, concentration,
    perturbation_type CRISPR|COMPOUND, cell_type), read as the RxRx3-core benchmark reads them:
    the perturbation is the treatment up to its first '_' (a CRISPR guide's gene) unless it names
    a control; EMPTY_control wells are the negative controls; the other '_control' wells
    (compound plates' controls) are left out of the map; batch = experiment."""
    return Layout(
        "rxrx3-core",
        {
            "perturbation": "treatment",
            "type": "perturbation_type",
            "control": "treatment",
            "batch": "experiment_name",
            "plate": "plate",
            "well": "address",
            "concentration": "concentration",
            "id": "well_id",
        },
        ("EMPTY_control",),
        "feature_",
        drop_other_controls=True,
    )


def jump() -> Layout:
    """JUMP cpg0016 profiles: Metadata_* columns and features in one table; negative controls by
    Metadata_pert_type == negcon; a gene's symbol (Metadata_Symbol) names a CRISPR/ORF well,
    else the compound's JCP2022 id (or InChIKey, or the pilot's broad_sample)."""
    return Layout(
        "jump",
        {
            "perturbation": "Metadata_Symbol|Metadata_JCP2022|Metadata_InChIKey|Metadata_broad_sample",
            "type": "Metadata_pert_type",
            "control": "Metadata_pert_type",
            "batch": "Metadata_Batch|Metadata_Source|Metadata_Plate",
            "plate": "Metadata_Plate",
            "well": "Metadata_Well",
            "concentration": "Metadata_mmoles_per_liter|Metadata_Concentration",
            "id": "",
        },
        ("negcon",),
    )


def morphoscale() -> Layout:
    """A profile table written by `embed --format parquet` or `features --format parquet`:
    obs as Metadata_<name> columns, the features the rest."""
    return Layout(
        "morphoscale",
        {
            "perturbation": "Metadata_perturbation",
            "type": "Metadata_perturbation_type",
            "control": "Metadata_is_control",
            "batch": "Metadata_batch",
            "plate": "Metadata_plate",
            "well": "Metadata_well",
            "concentration": "Metadata_concentration",
            "id": "Metadata_obs_name",
        },
        ("True",),
    )


def columns() -> Layout:
    """Any table: the roles named by --column (perturbation and batch at least); features are the
    numeric columns that play no role."""
    return Layout("columns", {}, ("control",))


LAYOUTS = {"rxrx3-core": rxrx3_core, "jump": jump, "morphoscale": morphoscale, "columns": columns}


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A parquet, CSV or TSV table (gzip allowed) with its values typed (features are numbers),
    or a one-line error naming the file."""
    from ..data.readers.base import table_kind

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    kind = table_kind(path)
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", low_memory=False)
    except Exception as e:
        raise InputError(f"{path}: cannot read as a table ({why(e)})") from None


def guess_layout(columns) -> str:
    cols = set(columns)
    if "well_id" in cols or any(c.startswith("feature_") for c in cols):
        return "rxrx3-core"
    if {"Metadata_perturbation", "Metadata_is_control", "Metadata_obs_name"} <= cols:
        return "morphoscale"
    if any(str(c).startswith("Metadata_") for c in cols):
        return "jump"
    raise InputError(
        "cannot tell the table's layout (no well_id/feature_ columns, no Metadata_ columns): give --layout and --column ROLE=NAME"
    )


def _resolve(layout: Layout, table: pd.DataFrame, overrides: dict[str, str], where: str) -> dict[str, str | None]:
    """role -> the column of `table` that plays it (None: absent and optional)."""
    out = {}
    for role in ROLES:
        spec = overrides.get(role, layout.columns.get(role, ""))
        choices = [c for c in spec.split("|") if c]
        hit = next((c for c in choices if c in table.columns), None)
        if role in overrides and hit is None:
            raise InputError(
                f"{where}: no column '{overrides[role]}' (--column {role}=...); columns: {', '.join(map(str, table.columns[:12]))}"
            )
        out[role] = hit
    for role in ("perturbation", "batch"):
        if out[role] is None:
            raise InputError(
                f"{where}: no {role} column (looked for {layout.columns.get(role) or 'none'}); name it with --column {role}=NAME"
            )
    return out


def read_external(
    path: Path,
    metadata: Path | None = None,
    layout: str = "auto",
    columns: dict[str, str] | None = None,
    control: str | None = None,
):
    """The table at `path` (and its `metadata` table, joined on the id column) as embeddings
    AnnData: X the features, obs perturbation, perturbation_type, is_control, batch (+ plate,
    well, concentration), one row per id (rows of the same id averaged, as the RxRx3-core
    benchmark does)."""
    import anndata as ad

    columns = dict(columns or {})
    unknown = [r for r in columns if r not in ROLES]
    if unknown:
        raise InputError(f"--column {unknown[0]}=...: unknown role; roles: {', '.join(ROLES)}")
    table = read_table(path, "embeddings")
    name = guess_layout(table.columns) if layout == "auto" else layout
    if name not in LAYOUTS:
        raise InputError(f"--layout {layout}: unknown; choose auto, {', '.join(LAYOUTS)}")
    lay = LAYOUTS[name]()
    feats = _feature_columns(table, lay, path, set(columns.values()))
    id_col = columns.get("id", lay.columns.get("id") or "")
    table, where = _one_row_per_id(table, feats, id_col, path, metadata)
    roles = _resolve(lay, table, columns, where)
    obs = _obs(table, roles, lay, control, where)
    keep = obs.pop("_keep").to_numpy(bool)
    X = table[feats].to_numpy(np.float32)[keep]
    obs = obs[keep].reset_index(drop=True)
    obs.index = (
        table[roles["id"]].astype(str)[keep].to_numpy()
        if roles["id"]
        else np.char.add("row", np.flatnonzero(keep).astype(str))
    )
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise InputError(
            f"{path}: {int(bad.sum())} rows have NaN or infinite features (first: '{obs.index[np.argmax(bad)]}')"
        )
    if not obs["is_control"].any():
        raise InputError(
            f"{where}: no negative-control well ({roles['control'] or roles['type']} == "
            f"{', '.join(_controls(lay, control))}); give --control VALUE"
        )
    emb = ad.AnnData(X=X, obs=obs)
    emb.var_names = [str(c) for c in feats]
    emb.uns["provenance"] = {
        "source": str(path),
        "metadata": str(metadata or ""),
        "layout": name,
        "left_out_rows": int((~keep).sum()),
        **{f"column_{r}": c for r, c in roles.items() if c},
    }
    return emb


def _one_row_per_id(table: pd.DataFrame, feats: list, id_col: str, path: Path, metadata: Path | None):
    """(the table with one row per id, features averaged, and the file its metadata names):
    joined with the metadata table on the id column, or the table itself."""
    if metadata is not None:
        meta = read_table(metadata, "metadata")
        for what, frame, src in (("embeddings", table, path), ("metadata", meta, metadata)):
            if id_col not in frame.columns:
                raise InputError(f"{src}: no '{id_col}' column to join the {what} on (--column id=NAME)")
        X = table.groupby(id_col, sort=False)[feats].mean()
        joined = meta.merge(X, left_on=id_col, right_index=True, how="inner")
        if not len(joined):
            raise InputError(f"{metadata}: no '{id_col}' value matches a row of {path}")
        return joined, f"{metadata}"
    if id_col and id_col in table.columns and table[id_col].duplicated().any():
        keep = [c for c in table.columns if c not in feats]
        table = (
            table.groupby(id_col, sort=False)
            .agg({**{c: "first" for c in keep if c != id_col}, **{c: "mean" for c in feats}})
            .reset_index()
        )
    return table, str(path)


def _controls(lay: Layout, control: str | None) -> tuple[str, ...]:
    return (control,) if control else lay.control_values


def _feature_columns(table: pd.DataFrame, lay: Layout, path: Path, named: set[str]) -> list:
    if lay.name == "columns":
        feats = [c for c in table.columns if c not in named and pd.api.types.is_numeric_dtype(table[c])]
    elif lay.feature_prefix:
        feats = [c for c in table.columns if str(c).startswith(lay.feature_prefix)]
    else:
        feats = [
            c for c in table.columns if not str(c).startswith("Metadata_") and pd.api.types.is_numeric_dtype(table[c])
        ]
    if not feats:
        raise InputError(
            f"{path}: no feature columns "
            f"({'prefix ' + lay.feature_prefix if lay.feature_prefix else 'numeric columns without a Metadata_ prefix'})"
        )
    return feats


def _obs(table: pd.DataFrame, roles: dict, lay: Layout, control: str | None, where: str) -> pd.DataFrame:
    """The contract's obs columns from the table's, and _keep (rows that go into the map)."""
    pert = table[roles["perturbation"]].astype("string")
    if (
        lay.name == "jump" and roles["perturbation"] == "Metadata_Symbol"
    ):  # compounds have no symbol: their JCP id instead
        for alt in ("Metadata_JCP2022", "Metadata_InChIKey", "Metadata_broad_sample"):
            if alt in table.columns:
                pert = pert.fillna(table[alt].astype("string"))
    if lay.name == "rxrx3-core":  # a CRISPR guide 'GENE_2' is the gene; controls keep their name
        pert = pert.where(pert.str.contains("_control", na=False), pert.str.split("_").str[0])
    if pert.isna().any():
        raise InputError(
            f"{where}: row {int(np.flatnonzero(pert.isna().to_numpy())[0])} has no perturbation ({roles['perturbation']} is empty)"
        )
    ctrl_col = roles["control"] or roles["type"]
    ctrl_values = _controls(lay, control)
    if ctrl_col == roles["perturbation"] or ctrl_col is None:
        is_ctrl = pert.isin(ctrl_values).to_numpy(bool)
    else:
        is_ctrl = table[ctrl_col].astype(str).isin(ctrl_values).to_numpy(bool)
    if lay.name == "jump" and roles["type"]:  # pert_type trt/poscon: a gene if the row has a symbol
        sym = (
            table["Metadata_Symbol"].notna()
            if "Metadata_Symbol" in table.columns
            else pd.Series(False, index=table.index)
        )
        kind = pd.Series(np.where(sym, "gene", "compound"), index=table.index)
    elif roles["type"]:
        kind = table[roles["type"]].astype(str).str.lower().map(lambda t: TYPES.get(t, t))
    else:
        kind = pd.Series("gene", index=table.index)
    kind = kind.where(~is_ctrl, "control")
    keep = np.ones(len(table), bool)
    if lay.drop_other_controls:
        keep &= ~(pert.str.contains("_control", na=False).to_numpy(bool) & ~is_ctrl)
    odd = sorted(set(kind[keep & ~is_ctrl]) - {"gene", "compound"})
    if odd:
        raise InputError(
            f"{where}: perturbation type '{odd[0]}' in {roles['type']} is neither a gene (CRISPR, ORF, siRNA) nor a compound"
        )
    obs = pd.DataFrame(
        {
            "perturbation": pert.to_numpy(str),
            "perturbation_type": kind.to_numpy(str),
            "is_control": is_ctrl,
            "batch": table[roles["batch"]].astype(str).to_numpy(),
        }
    )
    if roles["plate"]:
        plate = table[roles["plate"]].astype(str)
        obs["plate"] = (
            plate if roles["plate"] == roles["batch"] else table[roles["batch"]].astype(str) + "/" + plate
        ).to_numpy()
    if roles["well"]:
        obs["well"] = table[roles["well"]].astype(str).to_numpy()
    if roles["concentration"]:
        obs["concentration"] = pd.to_numeric(table[roles["concentration"]], errors="coerce").to_numpy()
    obs["_keep"] = keep
    return obs
