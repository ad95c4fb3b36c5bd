"""The `morphoscale` command: one verb per stage of the flow.

Errors a user can act on print one line and exit 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import InputError, MorphoscaleError
from .maps import DEFAULT_ALIGNER, aligner_help

_CLICK_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "bool": "BOOLEAN",
    "path": "PATH",
    "file": "FILE",
    "directory": "DIRECTORY",
}


def _option_type(self, ctx) -> str | None:
    """An option's value in help as click writes it (TEXT, PATH, INTEGER; a repeatable option
    says so in its help); a flag takes no value, so none. Typer 0.29 writes Python annotations
    instead (<bool>, <list[str]>)."""
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    if self.metavar is not None:
        return self.metavar
    label = self.display_type(ctx).strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    return _CLICK_NAMES.get(label, label.upper() if label.isidentifier() else label)


for _param in (typer.core.TyperOption, typer.core.TyperArgument):
    _param.display_type_rich = _option_type

app = typer.Typer(
    name="morphoscale",
    help="Learn representations of cellular morphology from microscopy and turn them into maps of biology.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(
    help="Real example data shipped inside public packages: list and fetch into the cache.", no_args_is_help=True
)

err_console = Console(stderr=True, soft_wrap=True)
out_console = Console(
    soft_wrap=True, markup=False
)  # paths and names are printed as they are (a "[x]" in one is not markup)


def _version(value: bool):
    if value:
        print(f"morphoscale {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
):
    """--debug is read by main() before the app runs; declared here so that help lists it."""


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

    from .simulate.screen import simulate as run_simulate

    path = run_simulate(out, preset, seed, workers, overwrite, progress=not quiet)
    meta = pd.read_csv(path / "metadata.csv")
    out_console.print(
        f"wrote {path}: {len(meta)} sites, {meta.well_id.nunique()} wells, {meta.experiment.nunique()} batches, "
        f"{meta[meta.perturbation_type == 'gene'].sirna.nunique()} genes, "
        f"{meta[meta.perturbation_type == 'compound'].sirna.nunique()} compounds; ground truth in {path / 'ground_truth'}"
    )
    out_console.print(f"ingest it with: morphoscale ingest --format rxrx --source {path} --out {path}.zarr")


# --- ingest -------------------------------------------------------------------


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
    from .data.ingest import ingest as run_ingest
    from .data.ingest import load_ingest_config

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
        "path_map": _assignments(path_map, "--path-map", "PREFIX=LOCAL_DIR") or None,
        "channels": [c.strip() for c in channels.split(",") if c.strip()] if channels else None,
    }
    if no_illum:
        overrides["illum"] = False
    if no_controls_ok:
        overrides["require_controls"] = False
    if column or control:
        overrides["columns"] = {
            **_assignments(column, "--column", "KEY=COLUMN"),
            **({"control_values": list(control)} if control else {}),
        }
    cfg = load_ingest_config(config, overrides)
    where = str(config) if config else "command line"
    path = run_ingest(cfg, out, overwrite=overwrite, progress=not quiet, where=where)
    from .data.store import ImageStore

    store = ImageStore(path)
    n, c, h, w = store.shape
    out_console.print(f"wrote {path}: {n} sites x {c} channels ({', '.join(store.channels)}) of {h}x{w} {store.dtype}")


@app.command(name="map")
def map_(
    embeddings: Annotated[
        Path,
        typer.Option(
            "--embeddings",
            help="Well- or site-level embeddings (.h5ad; obs: perturbation, perturbation_type, is_control, batch), or "
            "a table made elsewhere (.parquet/.csv: RxRx3-core, JUMP, or columns you name).",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="The map to write (.h5ad); aligned wells go beside it as <name>.wells.h5ad.")
    ],
    align: Annotated[str, typer.Option("--align", help=aligner_help())] = DEFAULT_ALIGNER,
    aggregate: Annotated[str, typer.Option("--aggregate", help="mean or median.")] = "mean",
    exclude: Annotated[
        Optional[list[str]], typer.Option("--exclude", help="Perturbations to leave out (repeatable).")
    ] = None,
    held_out_of: Annotated[
        Optional[Path],
        typer.Option(
            "--held-out-of",
            help="A train folder whose config has a split: keep only the wells it held out of training.",
        ),
    ] = None,
    metadata: Annotated[
        Optional[Path],
        typer.Option(
            "--metadata",
            help="A table's well metadata in a separate file (RxRx3-core: metadata_rxrx3_core.csv), joined on the id column.",
        ),
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            help="A table's layout: auto (default), rxrx3-core, jump, morphoscale (our parquet export), or columns "
            "(roles named by --column); docs/published.md.",
        ),
    ] = "auto",
    column: Annotated[
        Optional[list[str]],
        typer.Option(
            "--column",
            help="ROLE=NAME: the table column playing a role (perturbation, type, control, batch, plate, well, "
            "concentration, id); repeatable.",
        ),
    ] = None,
    control: Annotated[
        Optional[str],
        typer.Option(
            "--control",
            help="The value marking a negative-control well in the control column (RxRx3-core: EMPTY_control; JUMP: negcon).",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
):
    """Align embeddings on control wells and aggregate them into a map of perturbations."""
    from .data.split import scored_part, split_of_training
    from .errors import ConfigError
    from .io import check_output
    from .maps.build import build_map, read_embeddings, wells_path, write_h5ad

    check_output(out, overwrite)
    check_output(wells_path(out), overwrite)
    if str(embeddings).endswith(".h5ad"):
        if metadata or column or control or layout != "auto":
            raise ConfigError(
                "--metadata, --layout, --column and --control read a table made elsewhere (.parquet, .csv); an .h5ad carries its own obs"
            )
        emb = read_embeddings(embeddings)
    else:
        from .maps.external import read_external

        emb = read_external(embeddings, metadata, layout, _assignments(column, "--column", "ROLE=NAME"), control)
    if held_out_of is not None:
        emb = scored_part(emb, split_of_training(held_out_of), str(embeddings))
    m, aligned = build_map(emb, align=align, method=aggregate, exclude=exclude)
    write_h5ad(aligned, wells_path(out), overwrite)
    write_h5ad(m, out, overwrite)
    n_ctrl = int(m.obs["is_control"].sum())
    kept = m.uns["alignment"]
    out_console.print(
        f"wrote {out}: {m.n_obs - n_ctrl} perturbation profiles (+{n_ctrl} control) x {m.n_vars} dims, aligned with {align} "
        f"on {kept['n_controls']} control wells ({kept['n_components']} components kept of {kept['n_features_in']}), "
        f"{aggregate} per perturbation",
        markup=False,
        highlight=False,
    )


@app.command()
def bench(
    map_path: Annotated[Path, typer.Option("--map", help="A map written by `morphoscale map`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the tables, figures and summary.json.")],
    embeddings: Annotated[
        Optional[Path],
        typer.Option("--embeddings", help="Aligned well embeddings (default: the map's <name>.wells.h5ad)."),
    ] = None,
    raw_embeddings: Annotated[
        Optional[Path], typer.Option("--raw-embeddings", help="Unaligned embeddings, for the before/after UMAP.")
    ] = None,
    annotations: Annotated[
        Optional[Path],
        typer.Option(
            "--annotations",
            help="Folder of CORUM/HuMAP/Reactome/SIGNOR/StringDB .txt and CORUM_clusters.tsv (default: the cached efaar annotations).",
        ),
    ] = None,
    pairs: Annotated[
        Optional[list[str]],
        typer.Option("--pairs", help="Extra relationship source NAME=FILE (entity1,entity2 CSV); repeatable."),
    ] = None,
    compound_targets: Annotated[
        Optional[Path], typer.Option("--compound-targets", help="CSV compound,target for compound-gene retrieval.")
    ] = None,
    truth: Annotated[
        Optional[Path],
        typer.Option(
            "--truth",
            help="A simulated screen's ground_truth/ folder: decoding R2 and cosine correlation with the true phenotypes.",
        ),
    ] = None,
    clustering: Annotated[
        bool, typer.Option("--clustering", help="Also run UMAP + HDBSCAN clustering scores (slow).")
    ] = False,
    metrics: Annotated[
        Optional[list[str]],
        typer.Option(
            "--metrics",
            help="Only these metrics, comma-separated or repeated: recall, complexes, map_consistency, compound_gene, drug_similarity, "
            "map_target_consistency, consistency, magnitude, map_activity, drug_vs_control, umap, clustering, "
            "decoding_r2, truth_cosine (default: all the map supports but clustering and map_target_consistency).",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Recall and the cheapest checks only (recall, complexes, consistency, compound_gene, truth_cosine).",
        ),
    ] = False,
    protocol: Annotated[
        Optional[str],
        typer.Option(
            "--protocol",
            help="A published benchmark's metrics and steps: rxrx3-core (the paper: CRISPR-only recall, compound-gene "
            "retrieval), rxrx3-core-notebook, jump; docs/published.md.",
        ),
    ] = None,
    null_size: Annotated[
        int, typer.Option("--null-size", min=100, help="Draws of each mAP null (p-values resolve to 1 / (draws + 1)).")
    ] = 10000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of every sampled null.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No line per metric as it finishes.")] = False,
):
    """Measure how well a map recovers known biology (relationship recall, mAP, ...), each number with its 95% interval."""
    from .bench import summary as bench_summary
    from .bench.suite import run_bench
    from .report.console import bench_tables

    extra = {name: Path(path) for name, path in _assignments(pairs, "--pairs", "NAME=FILE").items()}
    log = None if quiet else (lambda line: err_console.print(line, markup=False, highlight=False))
    run_bench(
        map_path,
        out,
        embeddings,
        raw_embeddings,
        annotations,
        extra,
        compound_targets,
        clustering,
        null_size=null_size,
        seed=seed,
        overwrite=overwrite,
        truth=truth,
        metrics=metrics,
        quick=quick,
        log=log,
        protocol=protocol,
    )
    res = bench_summary.read(out)
    for table in bench_tables(res):
        _print_table(table)
    for key, why in res.skipped().items():
        out_console.print(f"skipped {key}: {why}", markup=False, highlight=False)
    out_console.print(f"wrote {out}/summary.json and tables")


def _assignments(items: list[str] | None, flag: str, form: str) -> dict[str, str]:
    """Repeated KEY=VALUE options as a dict; an item without '=' is a one-line error naming the flag."""
    from .errors import ConfigError

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} '{item}': expected {form}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _print_table(table) -> None:
    """A table at the width it needs, never wrapped into unreadable cells (a narrow terminal folds the lines instead)."""
    from rich.measure import Measurement

    need = Measurement.get(out_console, out_console.options.update(max_width=10_000), table).maximum
    width = out_console.width
    out_console.width = max(width, need)
    try:
        out_console.print(table)
    finally:
        out_console.width = width


@app.command()
def train(
    store: Annotated[Path, typer.Option("--store", help="The image store to train on.")],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder: checkpoints/, logs/, tensorboard/, previews/, model.ckpt.")
    ],
    config: Annotated[
        Optional[Path], typer.Option("--config", help="YAML training config (keys of TrainConfig, docs/train.md).")
    ] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model preset, e.g. mae_vit_tiny_patch8_64.")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per step.")] = None,
    devices: Annotated[Optional[str], typer.Option("--devices", help="Devices per node (an int, or auto).")] = None,
    num_nodes: Annotated[Optional[int], typer.Option("--num-nodes", help="Nodes (DDP).")] = None,
    strategy: Annotated[
        Optional[str],
        typer.Option("--strategy", help="auto, or ddp (data parallel; --batch-size stays the global batch)."),
    ] = None,
    accelerator: Annotated[Optional[str], typer.Option("--accelerator", help="auto, cpu or gpu.")] = None,
    probe_every: Annotated[
        Optional[int],
        typer.Option(
            "--probe-every",
            help="Probe the model (kNN, logistic, truth decoding on a fixed subset) at step 0 and every N steps; to metrics.csv.",
        ),
    ] = None,
    probe_truth: Annotated[
        Optional[Path],
        typer.Option("--probe-truth", help="A simulated screen's ground_truth/ folder: adds the decoding R2 probe."),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's last checkpoint.")] = False,
    resume_from: Annotated[Optional[Path], typer.Option("--resume-from", help="Continue from this checkpoint.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in an existing run folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
):
    """Train an encoder (MAE, channel-agnostic MAE, MU-Net, or a baseline) on a store, on one or many devices."""
    from .train.fit import load_train_config
    from .train.fit import train as run_train

    dev = int(devices) if devices and devices.isdigit() else devices
    cfg = load_train_config(
        config,
        {
            "model": model,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "devices": dev,
            "num_nodes": num_nodes,
            "strategy": strategy,
            "accelerator": accelerator,
            "probe_every": probe_every,
            "probe_truth": probe_truth,
        },
    )
    final = run_train(cfg, store, out, resume=resume, resume_from=resume_from, overwrite=overwrite, progress=not quiet)
    _say_once(f"wrote {final}")


def _say_once(text: str) -> None:
    """Print from global rank 0 only (under DDP every process runs the command)."""
    from .train.fit import is_global_zero

    if is_global_zero():
        out_console.print(text)


@app.command()
def embed(
    store: Annotated[Path, typer.Option("--store", help="The image store to embed.")],
    out: Annotated[Path, typer.Option("--out", help="Embeddings (.h5ad, or .parquet with --format parquet).")],
    layer: Annotated[
        int,
        typer.Option(
            "--layer",
            help="ViT block or CNN/U-Net stage whose output is the embedding (0 = first, -1 = last; U-Net: -1 = bottleneck).",
        ),
    ] = -1,
    pooling: Annotated[
        Optional[str],
        typer.Option(
            "--pooling",
            help="mean (over positions or patch tokens; the default), cls (ViTs), per_channel (channel-agnostic MAE), "
            "concat (CNN/U-Net: every stage up to --layer, pooled), flatten (MIDL CNN's position-indexed map, to reproduce the paper).",
        ),
    ] = None,
    level: Annotated[str, typer.Option("--level", help="crop, site or well.")] = "well",
    tile_size: Annotated[
        Optional[int], typer.Option("--tile-size", help="Tile size (default: the model's crop size).")
    ] = None,
    stride: Annotated[
        Optional[int], typer.Option("--stride", help="Tile stride (default: the tile size, no overlap).")
    ] = None,
    remainder: Annotated[str, typer.Option("--remainder", help="shift (cover every pixel), center or drop.")] = "shift",
    channels: Annotated[
        Optional[list[str]], typer.Option("--channels", help="Store channels to use (channel-agnostic models).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Tiles per forward pass.")] = 64,
    num_workers: Annotated[int, typer.Option("--num-workers", help="DataLoader workers.")] = 0,
    chunk_sites: Annotated[int, typer.Option("--chunk-sites", help="Sites per resumable chunk.")] = 256,
    fmt: Annotated[str, typer.Option("--format", help="h5ad or parquet.")] = "h5ad",
    compile: Annotated[
        bool,
        typer.Option("--compile", help="torch.compile the encoder (eager, with a warning, where compiling fails)."),
    ] = False,
    precision: Annotated[
        Optional[str],
        typer.Option(
            "--precision",
            help="32, bf16-mixed or 16-mixed (GPU only); default bf16-mixed on a GPU, 32 on the CPU. Embeddings are "
            "written as float32 either way.",
        ),
    ] = None,
    devices: Annotated[
        int,
        typer.Option(
            "--devices",
            help="Processes (devices) per node; above 1, Lightning Fabric runs DDP and each rank embeds its share of chunks.",
        ),
    ] = 1,
    num_nodes: Annotated[int, typer.Option("--num-nodes", help="Nodes.")] = 1,
    accelerator: Annotated[str, typer.Option("--accelerator", help="auto, cpu or gpu.")] = "auto",
    checkpoint: Annotated[
        Optional[Path], typer.Option("--checkpoint", help="A checkpoint written by `morphoscale train`.")
    ] = None,
    weights: Annotated[
        Optional[Path],
        typer.Option(
            "--weights",
            help="Pretrained weights from disk instead: OpenPhenom / maes_microscopy, a timm ViT, or ours; "
            "safetensors or torch (docs/published.md).",
        ),
    ] = None,
    weights_layout: Annotated[
        str, typer.Option("--weights-layout", help="auto (from the keys), openphenom, timm or morphoscale.")
    ] = "auto",
    arch: Annotated[
        Optional[str], typer.Option("--arch", help="A timm checkpoint's architecture, e.g. vit_small_patch16_224.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
):
    """Embed every site of a store with a trained encoder or pretrained weights (AnnData .h5ad), resumably, on one or many devices."""
    from .embed import embed as run_embed

    if devices < 1 or num_nodes < 1:
        raise InputError("--devices/--num-nodes: must be at least 1")
    path = run_embed(
        checkpoint,
        store,
        out,
        layer,
        pooling,
        level,
        tile_size,
        stride,
        remainder,
        channels,
        batch_size,
        num_workers,
        chunk_sites,
        fmt,
        compile,
        overwrite,
        progress=not quiet,
        devices=devices,
        num_nodes=num_nodes,
        accelerator=accelerator,
        weights=weights,
        weights_layout=weights_layout,
        arch=arch,
        precision=precision,
    )
    _say_once(f"wrote {path}")


@app.command()
def features(
    store: Annotated[Path, typer.Option("--store", help="The image store to measure.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Features (.h5ad, or .parquet with --format parquet), the same layout as `embed` writes."
        ),
    ],
    level: Annotated[str, typer.Option("--level", help="site or well.")] = "well",
    nuclear_channel: Annotated[str, typer.Option("--nuclear-channel", help="Channel to segment nuclei on.")] = "DNA",
    nucleus_diameter: Annotated[
        Optional[float],
        typer.Option("--nucleus-diameter", help="Nucleus diameter in pixels (default: estimated per site)."),
    ] = None,
    flatfield: Annotated[
        str,
        typer.Option(
            "--flatfield", help="none, or radial: correct vignetting per site from its nuclei (microscope fields)."
        ),
    ] = "none",
    statistic: Annotated[
        str, typer.Option("--statistic", help="Per-site reduction over cells: median or mean.")
    ] = "median",
    texture_levels: Annotated[
        int, typer.Option("--texture-levels", help="Grey levels of the Haralick co-occurrence matrices.")
    ] = 8,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Processes (default: one per core).")] = None,
    chunk_sites: Annotated[int, typer.Option("--chunk-sites", help="Sites per resumable chunk.")] = 64,
    fmt: Annotated[str, typer.Option("--format", help="h5ad or parquet.")] = "h5ad",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
):
    """Hand-crafted (CellProfiler-style) features of every site: segment, measure per cell, reduce to sites and wells."""
    import os

    from .features.extract import FeatureConfig, extract_features

    cfg = FeatureConfig(nuclear_channel, nucleus_diameter, flatfield, statistic, texture_levels)
    path = extract_features(
        store, out, cfg, level, workers or os.cpu_count() or 1, chunk_sites, fmt, overwrite, progress=not quiet
    )
    out_console.print(f"wrote {path}")


# the options `run` and `compare` share: both drive the cached flow of flow/pipeline.py
RunFolder = Annotated[Optional[Path], typer.Option("--out", help="The run folder (default: runs/<name>).")]
FromStage = Annotated[
    Optional[str], typer.Option("--from", help="Re-run from this stage on: data, train, embed, map, bench or report.")
]
QuietStages = Annotated[bool, typer.Option("--quiet", help="No progress bars inside the stages.")]


@app.command(name="run")
def run_(
    config: Annotated[Path, typer.Argument(help="The experiment config (YAML): data, encoders, map, bench.")],
    out: RunFolder = None,
    start: FromStage = None,
    quiet: QuietStages = False,
    check_reproducible: Annotated[
        Optional[list[str]],
        typer.Option(
            "--check-reproducible",
            help="After the run, re-run this stage (an id such as train:wsl, or a kind such as embed; repeatable) and "
            "compare its outputs with the run's own; exit 1 when they differ.",
        ),
    ] = None,
):
    """Run the whole flow from one config; unchanged stages are taken from the cache."""
    from .flow.config import load_run_config
    from .flow.pipeline import Flow

    cfg = load_run_config(config)
    flow = Flow(cfg, out or Path("runs") / cfg.name)
    if check_reproducible:
        from .flow.reproduce import stages_to_check

        stages_to_check(flow, check_reproducible)  # a wrong stage name fails before the run
    flow.run(start, progress=not quiet, console=err_console)
    if check_reproducible:
        print_reproducible(flow, check_reproducible)
        return
    if cfg.probe is not None:
        print_probe(flow.out / "probe" / "r2.csv")
    else:
        print_recall(flow.out / "recall.csv")
        print_paired(flow.out / "paired.csv")
    out_console.print(f"wrote {flow.out / 'report.html'}")


def print_reproducible(flow, names: list[str]) -> None:
    """Re-run the named stages, print what matched, exit 1 on any difference."""
    from .flow.reproduce import check_reproducible
    from .report.console import reproducible_table

    t = check_reproducible(flow, names, console=err_console)
    out_console.print(reproducible_table(t))
    out_console.print(f"wrote {flow.out / 'reproducible.csv'}")
    if not t["equal"].all():
        err_console.print(
            f"error: {int((~t['equal']).sum())} of {len(t)} outputs differ when their stage runs again (reproduce/ holds the re-run)",
            markup=False,
        )
        raise typer.Exit(1)


def print_recall(path: Path) -> None:
    """The recall table of a run (recall.csv, the same numbers the report shows), with 95% intervals."""
    from .report.console import recall_table

    table = recall_table(path)
    if table is None:
        out_console.print("no relationship recall (no genes with annotated pairs in the maps)")
    else:
        _print_table(table)


def print_paired(path: Path) -> None:
    """Each encoder minus its baseline (paired.csv): the difference and its 95% interval."""
    from .report.console import paired_table

    table = paired_table(path)
    if table is not None:
        _print_table(table)


def print_probe(path: Path) -> None:
    """The nucleus-probe table of a real-data run (probe/r2.csv, as in the report)."""
    from .report.console import probe_table

    _print_table(probe_table(path))


@app.command()
def compare(
    config: Annotated[Path, typer.Argument(help="The grid config (YAML): data, models, augment, crop, seeds, budget.")],
    out: RunFolder = None,
    start: FromStage = None,
    quiet: QuietStages = False,
):
    """Train and score a grid of setups under one budget (equal images seen by default), with time, memory and FLOPs."""
    from .compare.grid import compare as run_compare
    from .compare.grid import load_compare_config
    from .report.console import grid_table

    cfg = load_compare_config(config)
    folder = out or Path("runs") / cfg.name
    results = run_compare(cfg, folder, start, progress=not quiet, console=err_console)
    _print_table(grid_table(results))
    out_console.print(f"wrote {folder / 'compare' / 'results.csv'} and {folder / 'report.html'}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `morphoscale run`.")],
):
    """Write a self-contained report.html of a run folder (figures embedded, no network needed)."""
    from .report.html import write_report

    out_console.print(f"wrote {write_report(run_dir)}")


# --- datasets -----------------------------------------------------------------


@datasets_app.command("list")
def datasets_list():
    """The example datasets, where they come from, and whether they are in the cache."""
    from rich.table import Table

    from .data import examples

    table = Table("name", "from", "what", "cached at")
    for name, ex in examples.EXAMPLES.items():
        path = examples.cache_dir() / name
        table.add_row(name, ex.package, ex.description, str(path) if examples.is_cached(name) else "-")
    _print_table(table)


@datasets_app.command("get")
def datasets_get(
    names: Annotated[list[str], typer.Argument(help="Dataset names (see `datasets list`), or `all`.")],
    force: Annotated[bool, typer.Option("--force", help="Fetch again even when cached.")] = False,
):
    """Fetch example data into the cache (MORPHOSCALE_CACHE, default ~/.cache/morphoscale)."""
    from .data import examples

    if names == ["all"]:
        names = list(examples.EXAMPLES)
    for name in names:
        path = examples.get(name, force=force)
        out_console.print(f"{name}: {path}")


app.add_typer(datasets_app, name="datasets")
_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """morphoscale's own warnings as one line each; everything else as Python prints it."""
    from .errors import MorphoscaleWarning

    if issubclass(category, MorphoscaleWarning):
        err_console.print(f"[bold yellow]warning:[/] {rich_escape(str(message))}", markup=True, highlight=False)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def rich_escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user-facing errors into one line and an exit code."""
    from typer.exceptions import Abort, Exit, TyperException

    warnings.showwarning = _show_warning
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # Non-standalone typer returns the exit code of Exit (130 for Ctrl-C) instead of exiting.
        rv = app(args=args, prog_name="morphoscale", standalone_mode=False)
        if isinstance(rv, int) and rv != 0:
            if rv == 130:
                err_console.print("interrupted; re-run the same command to resume")
            return rv
    except MorphoscaleError as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {rich_escape(str(e))}", markup=True, highlight=False)
        return e.exit_code
    except Exit as e:
        return e.exit_code
    except Abort:
        err_console.print("aborted")
        return 130
    except TyperException as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            print(e.format_message())
            return 0
        if debug:
            raise
        msg = " ".join(e.format_message().split())
        err_console.print(f"[bold red]error:[/] {rich_escape(msg)}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
