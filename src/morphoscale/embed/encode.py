"""The embed verb: which encoder, on which device, over which tiles; chunk by chunk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import __version__
from ..chunked import ChunkedJob
from ..data.profiles import LEVELS, MISSING, apply_missing, write_profiles
from ..determinism import record
from ..errors import InputError
from ..io import check_output, file_sha256, refuse_overlap

REMAINDERS = ("shift", "center", "drop")  # what a tile grid does with the pixels past its last whole tile


def model_channels(model, store, channels: list[str] | None) -> tuple[list[str], list[int] | None]:
    """Which store channels feed the model, in the model's terms; mismatches are one-line errors."""
    known = list(model.channel_names)
    if getattr(model.cfg, "channel_agnostic", False):
        use = list(channels or store.channels)
        unknown = [c for c in use if c not in known]
        if unknown:
            raise InputError(
                f"{store.path}: channel(s) {', '.join(unknown)} unknown to the model (trained on {', '.join(known)}); "
                "pass --channels to choose"
            )
        store.channel_indices(use)
        return use, [known.index(c) for c in use]
    if channels and list(channels) != known:
        raise InputError(f"--channels: this model takes exactly {', '.join(known)} in that order")
    missing = [c for c in known if c not in store.channels]
    if missing:
        raise InputError(
            f"{store.path}: the store lacks channel(s) {', '.join(missing)} the model was trained on (store: {', '.join(store.channels)})"
        )
    return known, None


def check_options(
    level: str,
    fmt: str,
    batch_size: int,
    chunk_sites: int,
    tile_size: int | None,
    stride: int | None,
    num_workers: int,
    missing: str = "error",
    remainder: str = "shift",
    weights_layout: str = "auto",
    mlp_bias: str = "auto",
    input_norm: str = "auto",
) -> None:
    """Every option checked before anything is read or written."""
    from ..models.weights import INPUT_NORM_CHOICES, LAYOUTS, MLP_BIAS_CHOICES

    if mlp_bias not in MLP_BIAS_CHOICES:
        raise InputError(f"--mlp-bias: '{mlp_bias}' is not one of {', '.join(MLP_BIAS_CHOICES)}")
    if input_norm not in INPUT_NORM_CHOICES:
        raise InputError(f"--input-norm: '{input_norm}' is not one of {', '.join(INPUT_NORM_CHOICES)}")
    if missing not in MISSING:
        raise InputError(f"--missing: '{missing}' is not one of {', '.join(MISSING)}")
    if remainder not in REMAINDERS:
        raise InputError(f"--remainder: '{remainder}' is not one of {', '.join(REMAINDERS)}")
    if weights_layout not in LAYOUTS:
        raise InputError(f"--weights-layout: '{weights_layout}' is not one of {', '.join(LAYOUTS)}")
    if level not in LEVELS:
        raise InputError(f"--level: '{level}' is not one of {', '.join(LEVELS)}")
    if fmt not in ("h5ad", "parquet"):
        raise InputError(f"--format: '{fmt}' is not h5ad or parquet")
    for name, v in (
        ("--batch-size", batch_size),
        ("--chunk-sites", chunk_sites),
        ("--tile-size", tile_size),
        ("--stride", stride),
    ):
        if v is not None and v < 1:
            raise InputError(f"{name}: must be at least 1, got {v}")
    if num_workers < 0:
        raise InputError(f"--num-workers: must be 0 or more, got {num_workers}")


def load_encoder(
    checkpoint: Path | None,
    weights: Path | None,
    channels: list[str],
    weights_layout: str,
    arch: str | None,
    **reading,
):
    """(model in eval mode, its training module or None for pretrained weights). `reading`:
    mlp_bias, input_norm, mean, std, for pretrained weights only."""
    from ..train.checkpoint import load_module, load_pretrained

    if (checkpoint is None) == (weights is None):
        raise InputError(
            "embed: give --checkpoint (a morphoscale training checkpoint) or --weights (pretrained weights), one of them"
        )
    if weights is not None:
        return load_pretrained(weights, channels, weights_layout, arch, **reading), None
    given = {k: v for k, v in reading.items() if v not in (None, "auto", [], ())}
    if given:
        flag = "--" + next(iter(given)).replace("_", "-")
        raise InputError(f"{flag}: only with --weights (a training checkpoint is read as it was trained)")
    module = load_module(checkpoint)
    return module.model.eval(), module


def place(devices: int, num_nodes: int, accelerator: str):
    """(Fabric or None, device). Several processes: Lightning Fabric starts them (or joins
    torchrun / SLURM ones); each embeds every world-th unfinished chunk, rank 0 merges."""
    import torch

    from ..compute import wants_gpu

    if devices * num_nodes == 1:
        return None, torch.device("cuda" if wants_gpu(accelerator) else "cpu")
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp")
    fabric.launch()
    return fabric, fabric.device


def _shared_job(fabric, rank: int, out: Path, settings: dict, n_sites: int, chunk_sites: int) -> ChunkedJob:
    """Rank 0 opens (or resumes) the partial folder first; the others then find it, kept."""
    job = ChunkedJob(out, settings, n_sites, chunk_sites) if rank == 0 else None
    if fabric:
        fabric.barrier()
    return job or ChunkedJob(out, settings, n_sites, chunk_sites)


def readout(model, device, channel_ids, n_channels: int, tile: int, layer: int, pooling: str, compile: bool):
    """(forward function, its keyword arguments), tried once on a blank tile so that a layer or
    pooling the model lacks is one line before any work."""
    import torch

    from ..compute import compiled

    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    forward = compiled(model.embed, f"{model.preset}'s embedding") if compile else model.embed
    kwargs = {"layer": layer, "pooling": pooling}
    if channel_ids is not None:
        kwargs["channel_ids"] = torch.tensor(channel_ids, device=device)
    try:
        with torch.inference_mode():
            model.embed(torch.zeros(1, n_channels, tile, tile, device=device), **kwargs)
    except (ValueError, IndexError) as e:
        raise InputError(f"--pooling/--layer: {e}") from None
    return forward, kwargs


def embed_sites(model, forward, kwargs, sub, device, batch_size: int, num_workers: int, domains) -> np.ndarray:
    """(tiles of these sites, dim): every tile of a chunk of sites, in order."""
    import torch
    from torch.utils.data import DataLoader

    from .domains import embed_per_domain

    loader = DataLoader(
        sub,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if num_workers else None,
    )
    per_tile = []
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if domains is None:
            per_tile.append(forward(x, **kwargs).float().cpu().numpy())
        else:
            per_tile.append(embed_per_domain(model, forward, x, domains, batch["site"].numpy(), kwargs))
    return np.concatenate(per_tile)


# Long by its signature (the verb's 24 options); the body is the steps above, in order.
def embed(
    checkpoint: Path,
    store_path: Path,
    out: Path,
    layer: int = -1,
    pooling: str | None = None,
    level: str = "well",
    tile_size: int | None = None,
    stride: int | None = None,
    remainder: str = "shift",
    channels: list[str] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    chunk_sites: int = 256,
    fmt: str = "h5ad",
    compile: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    devices: int = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    weights: Path | None = None,
    weights_layout: str = "auto",
    arch: str | None = None,
    precision: str | None = None,
    missing: str = "error",
    mlp_bias: str = "auto",
    input_norm: str = "auto",
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> Path:
    import torch

    from ..compute import autocast, resolve_precision, wants_gpu
    from ..data.datasets import TileDataset
    from ..data.store import ImageStore
    from ..data.transforms import SELF_STANDARDIZE
    from .domains import adabn_states

    check_options(
        level,
        fmt,
        batch_size,
        chunk_sites,
        tile_size,
        stride,
        num_workers,
        missing,
        remainder,
        weights_layout,
        mlp_bias,
        input_norm,
    )
    precision = resolve_precision(precision, wants_gpu(accelerator), "--precision")
    out = Path(out)
    store = ImageStore(store_path)  # an input that is not a store is named first
    _ = store.sites  # read now: a damaged site table fails before any work
    refuse_overlap(out, store_path, checkpoint, weights)
    check_output(out, overwrite)
    damaged = apply_missing(store, missing)
    reading = {"mlp_bias": mlp_bias, "input_norm": input_norm, "mean": mean, "std": std}
    model, module = load_encoder(checkpoint, weights, list(channels or store.channels), weights_layout, arch, **reading)
    normalize = getattr(model, "input_norm", SELF_STANDARDIZE).for_dtype(store.dtype)
    use_channels, channel_ids = model_channels(model, store, channels)
    tile = tile_size or getattr(model.cfg, "img_size", None) or 64
    fabric, device = place(devices, num_nodes, accelerator)
    rank, world = (fabric.global_rank, fabric.world_size) if fabric else (0, 1)
    pooling = pooling or model.default_pooling
    forward, kwargs = readout(model, device, channel_ids, len(use_channels), tile, layer, pooling, compile)

    tiles = TileDataset(store, tile, stride, remainder, channels=use_channels, normalize=normalize)
    settings = {
        "checkpoint_sha256": file_sha256(Path(checkpoint or weights)),
        "preset": model.preset,
        "channels": use_channels,
        "layer": layer,
        "pooling": pooling,
        "tile_size": tile,
        "stride": tiles.stride,
        "remainder": remainder,
        "tiles_per_site": tiles.tiles_per_site,
        "level": level,
        "store": str(Path(store_path).resolve()),
        "store_identity": store.identity(),
        "n_sites": len(store),
        "adabn": bool(getattr(model.cfg, "adabn", False)),
        "precision": precision,
        **({"weights": json.dumps(model.weights_source)} if weights is not None else {}),
        "missing": missing,
        **({"damaged_sites": json.dumps(damaged)} if missing != "error" else {}),
    }
    job = _shared_job(fabric, rank, out, settings, len(store), chunk_sites)
    todo = job.todo(rank, world)
    domains = (
        adabn_states(model, store, tiles, use_channels, batch_size, device) if settings["adabn"] and todo else None
    )
    with job.working(), _bar(progress and rank == 0) as bar, torch.inference_mode(), autocast(device.type, precision):
        task = bar.add_task("embed", total=len(store), completed=job.n_done(todo))
        for i, a, b in todo:
            sub = TileDataset(
                store, tile, stride, remainder, channels=use_channels, sites=np.arange(a, b), normalize=normalize
            )
            E = embed_sites(model, forward, kwargs, sub, device, batch_size, num_workers, domains).reshape(
                b - a, tiles.tiles_per_site, -1
            )
            job.save(i, E if level == "crop" else E.mean(axis=1))
            bar.update(task, advance=b - a)

    if fabric:
        fabric.barrier()  # every rank's chunks are on disk
        if rank != 0:
            return out
    uns = _provenance(settings, module, model, job.started)
    write_profiles(job, store, tiles, level, uns, out, fmt, skip=damaged if missing == "skip" else None)
    job.finish()
    return out


def _provenance(settings: dict, module, model, started: str) -> dict:
    """The output's uns: every setting, the training config (or the pretrained weights), the
    version, when the run started and the determinism record."""
    trained = module.provenance() if module is not None else {"pretrained": model.weights_source}
    return {
        "provenance": {
            **{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in settings.items()},
            "train_config": json.dumps(trained, default=str),
            "morphoscale_version": __version__,
            "time": started,
            "determinism": json.dumps(record()),
        }
    }


def _bar(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cols = (TextColumn("embed"), BarColumn(), MofNCompleteColumn(), TextColumn("sites"), TimeRemainingColumn())
    return Progress(*cols, disable=not enabled)
