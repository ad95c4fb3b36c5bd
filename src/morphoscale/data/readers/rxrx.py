"""RxRx layouts: a metadata table and images/{experiment}/Plate{plate}/{well}_s{site}_w{k}.png
(RxRx1, RxRx2, RxRx3) or, for RxRx3-core (metadata_rxrx3_core.csv: experiment_name, plate,
address, gene, treatment, perturbation_type CRISPR|COMPOUND, no site), the HuggingFace keys
{experiment_name}/Plate{plate}/{address}_s1_{k} unpacked as images/<key>.jp2."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from ...errors import InputError, MorphoscaleWarning, Problems
from ..sitetable import SiteColumns, build_site_table
from .base import SourceTable, first_file, read_table

# Channel order of RxRx1/RxRx3 (w1..w6).
RXRX_CHANNELS = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
IMAGE_PATTERN = "{experiment}/Plate{plate}/{well}_s{site}_w{channel}.png"
RXRX3_CORE_PATTERN = "{experiment}/Plate{plate}/{well}_s{site}_{channel}.jp2"
METADATA_NAMES = ("metadata.csv", "metadata_rxrx3_core.csv", "metadata.csv.gz", "metadata.parquet")

RXRX_COLUMNS = SiteColumns(
    plate="plate",
    well="well",
    site="site",
    experiment="experiment",
    batch="experiment",
    perturbation="sirna",
    perturbation_type="perturbation_type",
    default_perturbation_type="gene",
    control_column="well_type",
    control_values=["negative_control"],
    positive_control_values=["positive_control"],
)

# RxRx3-core: a CRISPR well is its gene (the `gene` column; `treatment` is the guide), a
# compound well its treatment; EMPTY_control wells are the negative controls.
RXRX3_CORE_COLUMNS = SiteColumns(
    plate="plate",
    well="address",
    site=None,
    experiment="experiment_name",
    batch="experiment_name",
    perturbation="rxrx3_perturbation",
    perturbation_type="perturbation_type",
    default_perturbation_type="gene",
    control_column="treatment",
    control_values=["EMPTY_control"],
)


def is_rxrx3_core(raw: pd.DataFrame) -> bool:
    return {"experiment_name", "address", "treatment"} <= set(raw.columns) and "experiment" not in raw.columns


def metadata_file(source: Path) -> Path:
    if not source.is_dir():
        raise InputError(f"{source}: not a folder (expected an RxRx dataset with metadata.csv and images/)")
    if found := first_file(source, METADATA_NAMES):
        return found
    raise InputError(f"{source / METADATA_NAMES[0]}: file not found (nor {', '.join(METADATA_NAMES[1:])} beside it)")


def read_rxrx(
    source: Path,
    channels: list[str] | None = None,
    columns: SiteColumns | dict | None = None,
    require_controls: bool = True,
    problems: Problems | None = None,
    image_pattern: str | None = None,
    perturbation_names: Path | None = None,
    where: str = "config",
) -> SourceTable:
    """`columns`: the site columns, or overrides (a dict, the config's `columns:`) of RxRx1's
    own or, when the metadata has RxRx3-core's schema, of RxRx3-core's."""
    from ...config import parse_model

    source = Path(source)
    meta_path = metadata_file(source)
    raw = read_table(meta_path)
    core = is_rxrx3_core(raw)
    if not isinstance(columns, SiteColumns):
        base = (RXRX3_CORE_COLUMNS if core else RXRX_COLUMNS).model_dump()
        columns = parse_model(SiteColumns, {**base, **(columns or {})}, where, prefix="columns")
    pattern = image_pattern or (RXRX3_CORE_PATTERN if core else IMAGE_PATTERN)
    channels = list(channels or RXRX_CHANNELS)
    problems = problems if problems is not None else Problems()
    experiment = columns.experiment or columns.batch
    for role, col in (
        ("experiment", experiment),
        ("plate", columns.plate),
        ("well", columns.well),
        ("site", columns.site),
    ):
        if col is not None and col not in raw.columns:
            problems.add(
                meta_path,
                f"missing column '{col}' (the {role}, needed to locate the images; columns.{role} names another)",
            )
    if len(problems):
        problems.raise_if_any()
    raw = raw.copy()
    if core:
        crispr = raw["perturbation_type"].str.upper().eq("CRISPR") & raw["gene"].str.strip().ne("")
        raw["rxrx3_perturbation"] = raw["gene"].where(crispr, raw["treatment"])
    paths = _image_paths(raw, source / "images", pattern, channels, experiment, columns)
    # Plate numbers repeat across experiments: the site table's plate is experiment_plate.
    raw["plate_number"] = raw[columns.plate]
    raw[columns.plate] = raw[experiment].str.strip() + "_" + raw[columns.plate].str.strip()
    if perturbation_names is not None:
        # the ids stay in their own column (sirna), the names become the perturbation
        raw["perturbation_name"] = rename_perturbations(
            raw[columns.perturbation],
            Path(perturbation_names),
            raw[columns.control_column or columns.perturbation].isin(columns.control_values),
        )
        columns = columns.model_copy(
            update={"perturbation": "perturbation_name"}
            | ({} if columns.control_column else {"control_column": columns.perturbation})
        )
    sites = build_site_table(raw, columns, str(meta_path), problems, paths, require_controls)
    for extra in raw.columns:  # every other column of the metadata is kept (dataset, cell_type, sirna_id, SMILES, ...)
        if extra not in sites.columns and not str(extra).startswith("path_"):
            sites[extra] = raw[extra].to_numpy()
    return SourceTable(sites, channels, str(source))


def _image_paths(
    raw, images: Path, pattern: str, channels, experiment: str, columns: SiteColumns
) -> dict[str, pd.Series]:
    try:
        pattern.format(experiment="e", plate="p", well="w", site=1, channel=1)
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(
            f"image_pattern '{pattern}': {e!r} is not one of {{experiment}}, {{plate}}, {{well}}, {{site}}, {{channel}}"
        ) from None
    exp = raw[experiment].str.strip()
    plate = raw[columns.plate].str.strip()
    well = raw[columns.well].str.strip()
    site = raw[columns.site].str.strip() if columns.site else pd.Series("1", index=raw.index)
    return {
        ch: pd.Series(
            [
                str(images / pattern.format(experiment=e, plate=p, well=w, site=s, channel=k))
                for e, p, w, s in zip(exp, plate, well, site)
            ],
            index=raw.index,
        )
        for k, ch in enumerate(channels, start=1)
    }


def rename_perturbations(values: pd.Series, mapping: Path, is_control: pd.Series) -> pd.Series:
    """Perturbation ids -> names through a two-column table (RxRx1: siRNA -> gene symbol); an
    id the table lacks keeps its id, and a warning counts them."""
    table = read_table(mapping)
    if table.shape[1] < 2:
        raise InputError(
            f"{mapping}: a perturbation-name table needs two columns (the id as the metadata spells it, the name)"
        )
    names = dict(zip(table.iloc[:, 0].str.strip(), table.iloc[:, 1].str.strip()))
    ids = values.astype(str).str.strip()
    missing = ~ids.isin(names) & ~is_control.to_numpy(bool)
    if missing.any():
        warnings.warn(
            f"{mapping}: {int(missing.sum())} of {len(ids)} rows have an id the table lacks (e.g. "
            f"{ids[missing].iloc[0]}); they keep their id",
            MorphoscaleWarning,
            stacklevel=2,
        )
    return ids.map(names).fillna(ids)
