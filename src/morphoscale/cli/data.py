"""Verbs of the data: simulate a screen, ingest one, fetch the real examples.

A verb is its options: one typer option per parameter, which the formatter writes over three
or four lines each, and a short body; that is why some verbs run past 60 lines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, assignments, datasets_app, out_console, print_table


@app.command()
def simulate(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the simulated screen (RxRx layout) and its ground_truth/.")
    ],
    preset: Annotated[
        str, typer.Option("--preset", help="tiny (seconds), demo (the CPU demo), large (GPU scale).")
    ] = "demo",
    seed: Annotated[int, typer.Option("--seed", help="Same seed, bit-identical output.")] = 0,
    workers: Annotated[
        Optional[int], typer.Option("--workers", help="Rendering processes (default: one per core).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
):
    """Render a simulated CRISPR + compound Cell Painting screen with known biology (RxRx layout)."""
    import pandas as pd

    from ..simulate.screen import simulate as run_simulate

    path = run_simulate(out, preset, seed, workers, overwrite, progress=not quiet)
    meta = pd.read_csv(path / "metadata.csv")
    out_console.print(
        f"wrote {path}: {len(meta)} sites, {meta.well_id.nunique()} wells, {meta.experiment.nunique()} batches, "
        f"{meta[meta.perturbation_type == 'gene'].sirna.nunique()} genes, "
        f"{meta[meta.perturbation_type == 'compound'].sirna.nunique()} compounds; ground truth in {path / 'ground_truth'}"
    )
    out_console.print(f"ingest it with: morphoscale ingest --format rxrx --source {path} --out {path}.zarr")


@app.command()
def ingest(
    out: Annotated[Path, typer.Option("--out", help="The image store to write (a zarr folder).")],
    format: Annotated[Optional[str], typer.Option("--format", help="Source layout: rxrx, jump or csv.")] = None,
    source: Annotated[
        Optional[Path],
        typer.Option("--source", help="rxrx: dataset folder; jump: load_data.csv (or its folder); csv: the site CSV."),
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="YAML ingest config (keys of IngestConfig, see docs/ingest.md).")
    ] = None,
    platemap: Annotated[
        Optional[Path], typer.Option("--platemap", help="jump: platemap CSV/TSV joined on the well.")
    ] = None,
    platemap_well_column: Annotated[
        Optional[str],
        typer.Option("--platemap-well-column", help="jump: the platemap's well column (default well_position)."),
    ] = None,
    platemap_plate_column: Annotated[
        Optional[str],
        typer.Option(
            "--platemap-plate-column", help="jump: the platemap's plate column, when one platemap holds several plates."
        ),
    ] = None,
    jump_metadata: Annotated[
        Optional[Path],
        typer.Option(
            "--jump-metadata",
            help="jump: cpg0016's metadata folder (plate, well, compound, crispr, orf, perturbation_control tables), "
            "joined instead of a platemap.",
        ),
    ] = None,
    jump_perturbation: Annotated[
        Optional[str],
        typer.Option(
            "--jump-perturbation",
            help="jump with --jump-metadata: name a CRISPR/ORF well by its gene 'symbol' (default) or every well by its 'jcp2022' id.",
        ),
    ] = None,
    no_illum: Annotated[
        bool,
        typer.Option(
            "--no-illum", help="jump: do not divide by the load_data's illumination functions (FileName_Illum*)."
        ),
    ] = False,
    path_map: Annotated[
        Optional[list[str]],
        typer.Option(
            "--path-map",
            help="PREFIX=LOCAL_DIR: read images whose path starts with PREFIX (e.g. s3://cellpainting-gallery/) from "
            "LOCAL_DIR; repeatable.",
        ),
    ] = None,
    column: Annotated[
        Optional[list[str]],
        typer.Option(
            "--column",
            help="KEY=COLUMN: a site-table column's source (plate, well, site, batch, perturbation, "
            "perturbation_type, control_column, experiment); repeatable.",
        ),
    ] = None,
    control: Annotated[
        Optional[list[str]],
        typer.Option(
            "--control",
            help="A value of the control column that marks a negative-control well (repeatable; replaces the format's default).",
        ),
    ] = None,
    perturbation_names: Annotated[
        Optional[Path],
        typer.Option(
            "--perturbation-names",
            help="rxrx: a two-column table renaming perturbation ids (RxRx1: siRNA -> gene symbol).",
        ),
    ] = None,
    channels: Annotated[
        Optional[str],
        typer.Option(
            "--channels",
            help="Comma-separated channel names (jump: which Orig<CH> to read, e.g. DNA,ER,RNA,AGP,Mito,Brightfield).",
        ),
    ] = None,
    dtype: Annotated[
        Optional[str], typer.Option("--dtype", help="uint8 (percentile-scaled, default) or uint16 (bit-exact).")
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option("--workers", help="Decoding processes (default: one per core).")
    ] = None,
    no_controls_ok: Annotated[
        bool, typer.Option("--no-controls-ok", help="Accept batches without control wells.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
):
    """Decode a screen's images once into a zarr image store with its validated site table."""
    from ..data.ingest import ingest as run_ingest
    from ..data.ingest import load_ingest_config

    def text(p):
        return str(p) if p is not None else None

    overrides = {
        "format": format,
        "source": text(source),
        "platemap": text(platemap),
        "dtype": dtype,
        "workers": workers,
        "platemap_well_column": platemap_well_column,
        "platemap_plate_column": platemap_plate_column,
        "jump_metadata": text(jump_metadata),
        "jump_perturbation": jump_perturbation,
        "perturbation_names": text(perturbation_names),
        "path_map": assignments(path_map, "--path-map", "PREFIX=LOCAL_DIR") or None,
        "channels": [c.strip() for c in channels.split(",")]
        if channels
        else None,  # an empty name is an error, not skipped
    }
    if no_illum:
        overrides["illum"] = False
    if no_controls_ok:
        overrides["require_controls"] = False
    if column or control:
        overrides["columns"] = {
            **assignments(column, "--column", "KEY=COLUMN"),
            **({"control_values": list(control)} if control else {}),
        }
    cfg = load_ingest_config(config, overrides)
    where = str(config) if config else "command line"
    path = run_ingest(cfg, out, overwrite=overwrite, progress=not quiet, where=where)
    from ..data.store import ImageStore

    store = ImageStore(path)
    n, c, h, w = store.shape
    out_console.print(f"wrote {path}: {n} sites x {c} channels ({', '.join(store.channels)}) of {h}x{w} {store.dtype}")


@datasets_app.command("list")
def datasets_list():
    """The example datasets, where they come from, and whether they are in the cache."""
    from rich.table import Table

    from ..data import examples

    table = Table("name", "from", "what", "cached at")
    for name, ex in examples.EXAMPLES.items():
        path = examples.cache_dir() / name
        table.add_row(name, ex.package, ex.description, str(path) if examples.is_cached(name) else "-")
    print_table(table)


@datasets_app.command("get")
def datasets_get(
    names: Annotated[list[str], typer.Argument(help="Dataset names (see `datasets list`), or `all`.")],
    force: Annotated[bool, typer.Option("--force", help="Fetch again even when cached.")] = False,
):
    """Fetch example data into the cache (MORPHOSCALE_CACHE, default ~/.cache/morphoscale)."""
    from ..data import examples

    if names == ["all"]:
        names = list(examples.EXAMPLES)
    for name in names:
        path = examples.get(name, force=force)
        out_console.print(f"{name}: {path}")
