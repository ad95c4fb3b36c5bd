"""Verbs that make embeddings: train a model, embed with it, or measure hand-crafted features.

A verb is its options: one typer option per parameter, which the formatter writes over three
or four lines each, and a short body; that is why some verbs run past 60 lines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError
from .app import app, out_console


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
    from ..train.fit import load_train_config
    from ..train.fit import train as run_train

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
    from ..train.fit import is_global_zero

    if is_global_zero():
        out_console.print(text)


# embed and features: what to do with a site whose image chunk is missing or damaged (data/profiles.MISSING)
Missing = Annotated[
    str,
    typer.Option(
        "--missing",
        help="A site whose image chunk is missing or damaged: error (stop, naming it), blank (profile it as a blank "
        "image) or skip (leave it out); blank and skip say how many.",
    ),
]


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
    mlp_bias: Annotated[
        str,
        typer.Option(
            "--mlp-bias",
            help="ParallelScalingBlock's bias routing: legacy (timm <= 1.0.24, what OpenPhenom was trained with), "
            "fixed (timm >= 1.0.25), auto (legacy for openphenom weights, fixed for timm).",
        ),
    ] = "auto",
    input_norm: Annotated[
        str,
        typer.Option(
            "--input-norm",
            help="How --weights want their pixels: self (z-score per crop and channel), instance (/ full scale, "
            "InstanceNorm: OpenPhenom), mean_std (/ full scale, (x - mean) / std: timm), auto (as the weights were trained).",
        ),
    ] = "auto",
    mean: Annotated[
        Optional[list[float]],
        typer.Option("--mean", help="mean_std's mean per channel (or one for all), pixels / full scale; repeat."),
    ] = None,
    std: Annotated[
        Optional[list[float]], typer.Option("--std", help="mean_std's std per channel (or one for all); repeat.")
    ] = None,
    missing: Missing = "error",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
):
    """Embed every site of a store with a trained encoder or pretrained weights (AnnData .h5ad), resumably, on one or many devices."""
    from ..embed import embed as run_embed

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
        missing=missing,
        mlp_bias=mlp_bias,
        input_norm=input_norm,
        mean=mean,
        std=std,
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
    missing: Missing = "error",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
):
    """Hand-crafted (CellProfiler-style) features of every site: segment, measure per cell, reduce to sites and wells."""
    import os

    from ..features.extract import FeatureConfig, extract_features

    cfg = FeatureConfig(nuclear_channel, nucleus_diameter, flatfield, statistic, texture_levels)
    path = extract_features(
        store,
        out,
        cfg,
        level,
        os.cpu_count() or 1 if workers is None else workers,
        chunk_sites,
        fmt,
        overwrite,
        progress=not quiet,
        missing=missing,
    )
    out_console.print(f"wrote {path}")
