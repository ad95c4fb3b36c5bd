"""`morphoscale embed`: tiled crops -> site -> well embeddings, streamed, resumable.

Each site is cut into tiles of the model's crop size (data/datasets.py: tile_origins for the
remainder policy), tiles are embedded in batches under torch.inference_mode, and the tile
embeddings are averaged to the site (and sites to the well). Work is done in chunks of
sites; each finished chunk is saved under `OUT.partial/`, so an interrupted run resumes
with the unfinished chunks only. The output file is assembled chunk by chunk into an
AnnData .h5ad (X streamed into HDF5: memory does not grow with the store) and renamed
into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .determinism import record
from .errors import InputError
from .io import check_output, file_sha256, open_partial, refuse_overlap, save_chunk

LEVELS = ("crop", "site", "well")
SITE_SPECIFIC = ("site_id", "site")


def model_channels(model, store, channels: list[str] | None) -> tuple[list[str], list[int] | None]:
    """Which store channels feed the model, in the model's terms; mismatches are one-line errors."""
    known = list(model.channel_names)
    if getattr(model.cfg, "channel_agnostic", False):
        use = list(channels or store.channels)
        unknown = [c for c in use if c not in known]
        if unknown:
            raise InputError(f"{store.path}: channel(s) {', '.join(unknown)} unknown to the model (trained on {', '.join(known)}); pass --channels to choose")
        store.channel_indices(use)
        return use, [known.index(c) for c in use]
    if channels and list(channels) != known:
        raise InputError(f"--channels: this model takes exactly {', '.join(known)} in that order")
    missing = [c for c in known if c not in store.channels]
    if missing:
        raise InputError(f"{store.path}: the store lacks channel(s) {', '.join(missing)} the model was trained on (store: {', '.join(store.channels)})")
    return known, None


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
) -> Path:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from torch.utils.data import DataLoader

    from .compute import autocast, compiled, resolve_precision, wants_gpu
    from .data.datasets import TileDataset
    from .data.store import ImageStore
    from .train.run import load_module

    if level not in LEVELS:
        raise InputError(f"--level: '{level}' is not one of {', '.join(LEVELS)}")
    if fmt not in ("h5ad", "parquet"):
        raise InputError(f"--format: '{fmt}' is not h5ad or parquet")
    for name, v in (("--batch-size", batch_size), ("--chunk-sites", chunk_sites), ("--tile-size", tile_size), ("--stride", stride)):
        if v is not None and v < 1:
            raise InputError(f"{name}: must be at least 1, got {v}")
    if num_workers < 0:
        raise InputError(f"--num-workers: must be 0 or more, got {num_workers}")
    precision = resolve_precision(precision, wants_gpu(accelerator), "--precision")
    out = Path(out)
    store = ImageStore(store_path)  # an input that is not a store is named first
    refuse_overlap(out, store_path, checkpoint, weights)
    check_output(out, overwrite)
    if (checkpoint is None) == (weights is None):
        raise InputError("embed: give --checkpoint (a morphoscale training checkpoint) or --weights (pretrained weights), one of them")
    if weights is not None:
        from .models.weights import load_pretrained

        model = load_pretrained(weights, list(channels or store.channels), weights_layout, arch)
    else:
        module = load_module(checkpoint)
        model = module.model.eval()
    use_channels, channel_ids = model_channels(model, store, channels)
    tile = tile_size or getattr(model.cfg, "img_size", None) or 64
    fabric = None
    if devices * num_nodes > 1:
        # Lightning Fabric starts the other processes (or joins torchrun / SLURM ones); each
        # embeds every world-th unfinished chunk into the shared partial folder, rank 0 merges.
        from lightning.fabric import Fabric

        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp")
        fabric.launch()
        device = fabric.device
    else:
        device = torch.device("cuda" if wants_gpu(accelerator) else "cpu")
    rank, world = (fabric.global_rank, fabric.world_size) if fabric else (0, 1)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    forward = compiled(model.embed, f"{model.preset}'s embedding") if compile else model.embed
    pooling = pooling or model.default_pooling
    kwargs = {"layer": layer, "pooling": pooling}
    if channel_ids is not None:
        kwargs["channel_ids"] = torch.tensor(channel_ids, device=device)
    try:
        with torch.inference_mode():
            model.embed(torch.zeros(1, len(use_channels), tile, tile, device=device), **kwargs)
    except (ValueError, IndexError) as e:
        raise InputError(f"--pooling/--layer: {e}") from None

    tiles = TileDataset(store, tile, stride, remainder, channels=use_channels)
    n_sites = len(store)
    settings = {"checkpoint_sha256": file_sha256(Path(checkpoint or weights)), "preset": model.preset, "channels": use_channels, "layer": layer, "pooling": pooling,
                "tile_size": tile, "stride": tiles.stride, "remainder": remainder, "tiles_per_site": tiles.tiles_per_site, "level": level,
                "store": str(Path(store_path).resolve()), "n_sites": n_sites, "adabn": bool(getattr(model.cfg, "adabn", False)),
                "precision": precision}
    if weights is not None:
        settings["weights"] = json.dumps(model.weights_source)
    if rank == 0:
        part, started = open_partial(out, settings)
    if fabric:
        fabric.barrier()
    if rank != 0:
        part, started = open_partial(out, settings)  # rank 0 made it: kept, same settings
    chunks = [(c, min(c + chunk_sites, n_sites)) for c in range(0, n_sites, chunk_sites)]
    todo = [(i, a, b) for i, (a, b) in enumerate(chunks) if not (part / f"chunk{i:06d}.npy").exists()][rank::world]
    cols = (TextColumn("embed"), BarColumn(), MofNCompleteColumn(), TextColumn("sites"), TimeRemainingColumn())
    domains = adabn_states(model, store, tiles, use_channels, batch_size, device) if settings["adabn"] and todo else None
    with Progress(*cols, disable=not progress or rank != 0) as bar, torch.inference_mode(), autocast(device.type, precision):
        task = bar.add_task("embed", total=n_sites, completed=n_sites - sum(b - a for _, a, b in todo))
        for i, a, b in todo:
            sub = TileDataset(store, tile, stride, remainder, channels=use_channels, sites=np.arange(a, b))
            loader = DataLoader(sub, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda",
                                prefetch_factor=4 if num_workers else None)
            per_tile = []
            for batch in loader:
                x = batch["image"].to(device, non_blocking=True)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                if domains is None:
                    per_tile.append(forward(x, **kwargs).float().cpu().numpy())
                else:
                    per_tile.append(_embed_per_domain(model, forward, x, domains, batch["site"].numpy(), kwargs))
            E = np.concatenate(per_tile).reshape(b - a, tiles.tiles_per_site, -1)
            result = E if level == "crop" else E.mean(axis=1)
            save_chunk(part, i, result)
            bar.update(task, advance=b - a)

    if fabric:
        fabric.barrier()  # every rank's chunks are on disk
        if rank != 0:
            return out
    uns = {"provenance": {**{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in settings.items()},
                          "train_config": json.dumps(module.provenance() if weights is None else {"pretrained": model.weights_source}, default=str),
                          "morphoscale_version": __version__, "time": started,
                          "determinism": json.dumps(record())}}
    assemble(part, chunks, store, tiles, level, uns, out, fmt)
    shutil.rmtree(part)
    return out


ADABN_SITES = 256  # sites per experimental batch that estimate its BatchNorm statistics


def adabn_states(model, store, tiles, channels, batch_size, device) -> tuple[np.ndarray, dict]:
    """AdaBN: BatchNorm statistics of each experimental batch, estimated on the tiles of up
    to ADABN_SITES of its sites (a seeded sample). Returns (batch code per site, states)."""
    from torch.utils.data import DataLoader

    from .data.datasets import TileDataset, column_codes
    from .models.adabn import estimate_batchnorm_state

    codes, _ = column_codes(store, "batch")
    states = {}
    for d in np.unique(codes):
        sites = np.flatnonzero(codes == d)
        if len(sites) > ADABN_SITES:
            sites = np.sort(np.random.default_rng(int(d)).choice(sites, ADABN_SITES, replace=False))
        sub = TileDataset(store, tiles.tile_size, tiles.stride, channels=channels, sites=sites)
        images = (b["image"].to(device) for b in DataLoader(sub, batch_size=batch_size))
        states[int(d)] = estimate_batchnorm_state(model, images, forward=model.encoder)
    return codes, states


def _embed_per_domain(model, forward, x, domains, sites, kwargs) -> np.ndarray:
    from .models.adabn import load_batchnorm_state

    codes, states = domains
    out = None
    tile_domains = codes[sites]
    for d in np.unique(tile_domains):
        rows = np.flatnonzero(tile_domains == d)
        load_batchnorm_state(model, states[int(d)])
        e = forward(x[rows], **kwargs).float().cpu().numpy()
        if out is None:
            out = np.empty((len(x), e.shape[1]), np.float32)
        out[rows] = e
    return out


def _obs(store, tiles, level: str) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Row metadata at the level, and for wells the site -> well index."""
    sites = store.sites.copy()
    sites = sites[[c for c in sites.columns if not c.startswith(("source_", "illum_"))]]  # file paths are the store's provenance, not metadata
    if level == "site":
        obs = sites
        obs.index = sites["site_id"].astype(str).to_numpy()
        return obs, None
    if level == "crop":
        rows = np.repeat(np.arange(len(sites)), tiles.tiles_per_site)
        obs = sites.iloc[rows].reset_index(drop=True)
        ys, xs = zip(*tiles.origins)
        obs["tile_y"] = np.tile(ys, len(sites))
        obs["tile_x"] = np.tile(xs, len(sites))
        obs.index = (obs["site_id"].astype(str) + "_" + obs["tile_y"].astype(str) + "_" + obs["tile_x"].astype(str)).to_numpy()
        return obs, None
    key = sites["plate"].astype(str) + "_" + sites["well"].astype(str)
    codes, uniques = pd.factorize(key)
    first = sites.groupby(codes, sort=True).head(1).set_index(pd.Index(codes[sites.groupby(codes, sort=True).head(1).index]))
    obs = first.sort_index().drop(columns=[c for c in SITE_SPECIFIC if c in first.columns])
    obs["n_sites"] = np.bincount(codes)
    obs.index = np.asarray(uniques).astype(str)
    return obs, codes


def profile_metadata(obs: pd.DataFrame) -> pd.DataFrame:
    """obs as the metadata columns of a profile table: every name prefixed `Metadata_` (the
    convention pycytominer and the JUMP profiles follow: features are the rest), the row
    name as `Metadata_obs_name`; `map --embeddings` reads such a table back."""
    meta = obs.reset_index(names="obs_name")
    meta.columns = [c if str(c).startswith("Metadata_") else f"Metadata_{c}" for c in meta.columns]
    return meta


def assemble(part: Path, chunks, store, tiles, level: str, uns: dict, out: Path, fmt: str, var_names: list[str] | None = None) -> None:
    """Stream the chunks into the output (a temporary name, renamed when complete)."""
    import h5py
    from anndata.io import write_elem

    obs, codes = _obs(store, tiles, level)
    dim = np.load(part / "chunk000000.npy", mmap_mode="r").shape[-1]
    var = pd.DataFrame(index=var_names or [f"emb_{k}" for k in range(dim)])

    def row_blocks():
        """The rows of X in order, one chunk at a time (wells: averaged over their sites first)."""
        if level == "well":
            sums = np.zeros((len(obs), dim), np.float64)
            for i, (a, b) in enumerate(chunks):
                np.add.at(sums, codes[a:b], np.load(part / f"chunk{i:06d}.npy"))
            yield (sums / np.bincount(codes)[:, None]).astype(np.float32)
            return
        for i in range(len(chunks)):
            yield np.load(part / f"chunk{i:06d}.npy").reshape(-1, dim)

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if fmt == "parquet":
            df = pd.concat([profile_metadata(obs), pd.DataFrame(np.concatenate(list(row_blocks())), columns=var.index)], axis=1)
            df.to_parquet(tmp, index=False)
        else:
            n = len(obs)
            with h5py.File(tmp, "w") as f:
                f.attrs["encoding-type"] = "anndata"
                f.attrs["encoding-version"] = "0.1.0"
                X = f.create_dataset("X", shape=(n, dim), dtype="float32", chunks=(min(n, 4096), dim))
                X.attrs["encoding-type"] = "array"
                X.attrs["encoding-version"] = "0.2.0"
                start = 0
                for block in row_blocks():
                    X[start : start + len(block)] = block
                    start += len(block)
                write_elem(f, "obs", _h5_safe(obs))
                write_elem(f, "var", var)
                write_elem(f, "uns", uns)
                for k in ("obsm", "varm", "obsp", "varp", "layers"):
                    write_elem(f, k, {})
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except OSError as e:
        from .io import os_error_message

        raise InputError(os_error_message(out, e)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _h5_safe(obs: pd.DataFrame) -> pd.DataFrame:
    obs = obs.copy()
    for c in obs.columns:
        if obs[c].dtype == object or str(obs[c].dtype) == "string":
            obs[c] = obs[c].astype(str)
    return obs
