"""Ingest: decode every image once into a zarr store, in parallel, resumably.

The store is built under `<out>.partial` and renamed to `<out>` only when every
site is written, so a killed ingest never leaves a store that looks complete.
A re-run with the same inputs and config resumes: finished sites are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator

from .. import __version__
from ..config import parse_model, read_yaml
from ..errors import ConfigError, InputError, Problems
from ..io import IMAGE_STORE, check_output, commit_dir, mark_output, os_error_message, partial_dir, refuse_overlap
from .ingest_workers import run_workers
from .readers import READERS, SourceTable, check_illumination, check_images
from .readers.base import ILLUM_PREFIX
from .readers.cpg0016 import CPG0016_COLUMNS
from .readers.jump import JUMP_COLUMNS
from .readers.rxrx import RXRX_COLUMNS
from .sitetable import SiteColumns, channel_path_columns
from .store import IMAGE_DIMENSIONS, RANGE_DIMENSIONS, STORE_FORMAT, blosc_codec, write_site_table

DEFAULT_COLUMNS = {"rxrx": RXRX_COLUMNS, "jump": JUMP_COLUMNS, "csv": SiteColumns()}


class IngestConfig(BaseModel):
    """Everything `morphoscale ingest` needs; YAML keys have these names."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["rxrx", "jump", "csv"]
    source: Path
    # rxrx: names of w1..wN (default DNA, ER, Actin, RNA, Mito, Golgi); jump: which Orig<CH> to read.
    channels: list[str] | None = None
    # csv only: channel name -> path column, in channel order.
    channel_columns: dict[str, str] | None = None
    # jump only: the platemap joined on the well (default: platemap.csv beside load_data.csv).
    platemap: Path | None = None
    platemap_well_column: str = "well_position"
    platemap_plate_column: str | None = None
    # jump only: cpg0016 metadata (jump-cellpainting/datasets' metadata/ folder) joined on plate
    # and well instead of a platemap; a CRISPR/ORF well is named by its gene symbol (symbol) or
    # every well by its JCP2022 id (jcp2022).
    jump_metadata: Path | None = None
    jump_perturbation: Literal["symbol", "jcp2022"] = "symbol"
    # jump only: divide by the load_data's illumination functions (FileName_Illum<CH>).
    illum: bool = True
    # rxrx only: where each image is under images/ ({experiment}, {plate}, {well}, {site},
    # {channel} = 1..N); default RxRx1's, or RxRx3-core's for its metadata table.
    image_pattern: str | None = None
    # A two-column table renaming the perturbation column's ids (RxRx1: siRNA -> gene symbol).
    perturbation_names: Path | None = None
    # Where remote image paths are found here: prefix (s3://bucket/...) -> local folder.
    path_map: dict[str, str] = {}
    # Overrides of the format's default column mapping (keys of SiteColumns).
    columns: dict = {}
    require_controls: bool = True
    dtype: Literal["uint8", "uint16"] = "uint8"
    clip_percentiles: tuple[float, float] = (0.1, 99.9)
    workers: int = max(1, os.cpu_count() or 1)

    @field_validator("clip_percentiles")
    @classmethod
    def _clip_order(cls, v):
        lo, hi = v
        if not (0.0 <= lo < hi <= 100.0):
            raise ValueError("need 0 <= low < high <= 100")
        return v

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, v):
        """Channels are found by name downstream: each must be named, once."""
        if v is not None:
            if any(not c.strip() for c in v):
                raise ValueError("a channel has an empty name")
            twice = sorted({c for c in v if v.count(c) > 1})
            if twice:
                raise ValueError(f"channel(s) named twice: {', '.join(twice)}")
        return v

    @field_validator("workers")
    @classmethod
    def _workers(cls, v):
        if v < 1:
            raise ValueError("need at least 1 worker")
        return v

    def site_columns(self, source: str) -> SiteColumns:
        base = (CPG0016_COLUMNS if self.jump_metadata else DEFAULT_COLUMNS[self.format]).model_dump()
        base.update(self.columns)
        return parse_model(SiteColumns, base, source, prefix="columns")


def load_ingest_config(config_path: Path | None, overrides: dict) -> IngestConfig:
    """The YAML config (paths relative to its folder), then CLI overrides on top."""
    data: dict = {}
    where = "command line"
    if config_path is not None:
        data = read_yaml(config_path)
        where = str(config_path)
        for key in ("source", "platemap", "jump_metadata", "perturbation_names"):
            if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
                data[key] = str(Path(config_path).parent / data[key])
    for key in ("columns", "path_map"):  # the command line adds to the config's, key by key
        if overrides.get(key) is not None and isinstance(data.get(key), dict):
            overrides = {**overrides, key: {**data[key], **overrides[key]}}
    data.update({k: v for k, v in overrides.items() if v is not None})
    if "format" not in data:
        raise ConfigError(f"{where}: key 'format': required (rxrx, jump or csv); pass --format")
    if "source" not in data:
        raise ConfigError(f"{where}: key 'source': required; pass --source")
    return parse_model(IngestConfig, data, where)


def read_source(cfg: IngestConfig, where: str = "config") -> SourceTable:
    """Run the format's reader and validate every image header; raise one report of all problems."""
    problems = Problems()
    if cfg.format != "csv" and cfg.channel_columns:
        raise ConfigError(f"{where}: key 'channel_columns': only for format csv")
    for key, fmt in (
        ("platemap", "jump"),
        ("jump_metadata", "jump"),
        ("image_pattern", "rxrx"),
        ("perturbation_names", "rxrx"),
    ):
        if cfg.format != fmt and getattr(cfg, key):
            raise ConfigError(f"{where}: key '{key}': only for format {fmt}")
    if cfg.format == "rxrx":
        # the reader starts from RxRx1's columns or RxRx3-core's, by the metadata's schema
        table = READERS["rxrx"](
            cfg.source,
            cfg.channels,
            dict(cfg.columns),
            cfg.require_controls,
            problems,
            cfg.image_pattern,
            cfg.perturbation_names,
            where,
        )
    elif cfg.format == "jump":
        table = READERS["jump"](
            cfg.source,
            cfg.channels,
            cfg.site_columns(where),
            cfg.require_controls,
            problems,
            cfg.platemap,
            cfg.platemap_well_column,
            cfg.platemap_plate_column,
            cfg.path_map,
            cfg.illum,
            cfg.jump_metadata,
            cfg.jump_perturbation,
        )
    else:
        if cfg.channels and cfg.channel_columns and list(cfg.channels) != list(cfg.channel_columns):
            raise ConfigError(f"{where}: key 'channels': must match the keys of channel_columns")
        table = READERS["csv"](
            cfg.source, cfg.channel_columns or {}, cfg.site_columns(where), cfg.require_controls, problems, cfg.path_map
        )
    if len(table.sites) == 0 and not len(problems):
        problems.add(table.source, "no sites to ingest")
    if not len(problems):
        header = check_images(table, problems, table.source)
        if header:
            table.image_shape, table.image_dtype = header
            check_illumination(table, problems)
    problems.raise_if_any()
    return table


# --- the driver ------------------------------------------------------------


def _fingerprint(cfg: IngestConfig, table: SourceTable) -> str:
    h = hashlib.sha256()
    h.update(cfg.model_dump_json(exclude={"workers"}).encode())
    h.update(pd.util.hash_pandas_object(table.sites.astype(str), index=True).values.tobytes())
    return h.hexdigest()[:16]


def _read_progress(log: Path, n_channels: int) -> dict[int, list]:
    done: dict[int, list] = {}
    if not log.exists():
        return done
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
            if len(rec["r"]) == n_channels:
                done[int(rec["i"])] = rec["r"]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    return done


def ingest(cfg: IngestConfig, out: Path, overwrite: bool = False, progress: bool = True, where: str = "config") -> Path:
    """Validate the source, then write the store; returns the store path. The store is built
    in OUT.partial (its fingerprint says of which inputs), so a killed ingest resumes with
    the sites not yet written, and a changed input never mixes into it."""
    out = Path(out)
    refuse_overlap(out, cfg.source, cfg.platemap, cfg.jump_metadata, cfg.perturbation_names)
    table = read_source(cfg, where)
    refuse_overlap(out, *_image_folders(table))
    check_output(out, overwrite, IMAGE_STORE)
    part = partial_dir(out)
    fingerprint = _fingerprint(cfg, table)
    _drop_stale_partial(part, fingerprint, overwrite)
    try:
        if not part.exists():
            _create_partial(part, cfg, table, fingerprint)
        _remove_torn_chunks(part)
        log = part / "progress.jsonl"
        done = _read_progress(log, len(table.channels))
        todo = [(i, table.paths(i), table.illum_paths(i)) for i in range(len(table.sites)) if i not in done]
        run_workers(todo, part, cfg, table.image_shape, log, done, len(table.sites), progress)
        _finalize(part, table, done, table.channels)
        mark_output(part, IMAGE_STORE)
    except OSError as e:
        raise InputError(os_error_message(part, e)) from None
    commit_dir(part, out)
    (out / "progress.jsonl").unlink(missing_ok=True)  # kept until the rename, so a kill before it loses nothing
    return out


def _image_folders(table: SourceTable) -> list[str]:
    """The folders the source's images are in (an output that holds one would delete them)."""
    import os

    paths = pd.unique(table.sites[channel_path_columns(table.sites)].to_numpy().ravel())
    return sorted({os.path.dirname(str(p)) for p in paths})


def _remove_torn_chunks(part: Path) -> None:
    """Chunk writes a kill cut short (`.<chunk>.tmp-<pid>`): their sites are not in the log,
    so they are written again; the temporaries themselves would stay in the store."""
    for tmp in (part / "images").rglob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


def _drop_stale_partial(part: Path, fingerprint: str, overwrite: bool) -> None:
    """An unfinished store of other inputs or config is refused, or removed with --overwrite."""
    import zarr

    if not part.exists():
        return
    try:
        attrs = dict(zarr.open_group(part, mode="r").attrs)
    except Exception:
        attrs = {}
    if attrs.get("fingerprint") != fingerprint:
        if not overwrite:
            raise InputError(
                f"{part}: an unfinished ingest with different inputs or config is there; remove it or pass --overwrite"
            )
        shutil.rmtree(part)


def _create_partial(part: Path, cfg: IngestConfig, table, fingerprint: str) -> None:
    """The empty store (one chunk per site) with its attributes, made under a temporary name
    and renamed, so a partial folder is always a valid store."""
    tmp_group = part.with_name(part.name + ".init")
    shutil.rmtree(tmp_group, ignore_errors=True)
    try:
        _write_empty_store(tmp_group, cfg, table, fingerprint)
        os.replace(tmp_group, part)
    except BaseException:  # a full disk, an interrupt: nothing is left
        _remove_when_settled(tmp_group)
        raise


def _remove_when_settled(folder: Path, tries: int = 40) -> None:
    """Remove a folder zarr was writing: a failed write ends the call while zarr's other
    writes of it may still land (its event loop runs them in a thread), so remove until gone."""
    import time

    for _ in range(tries):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.05)


def _write_empty_store(tmp_group: Path, cfg: IngestConfig, table, fingerprint: str) -> None:
    import zarr

    n, channels = len(table.sites), table.channels
    h, w = table.image_shape
    group = zarr.open_group(tmp_group, mode="w")
    group.create_array(
        "images",
        shape=(n, len(channels), h, w),
        chunks=(1, len(channels), h, w),
        dtype=cfg.dtype,
        compressors=[blosc_codec(cfg.dtype)],
        fill_value=0,
        dimension_names=IMAGE_DIMENSIONS,
        # Flat chunk names (c.<site>.0.0.0): nested ones cost three new folders
        # per site, 2 ms of the writer's time. Stores with either are read alike.
        chunk_key_encoding={"name": "default", "separator": "."},
    )
    group.attrs.update(
        format=STORE_FORMAT,
        complete=False,
        fingerprint=fingerprint,
        channels=channels,
        dtype=cfg.dtype,
        clip_percentiles=list(cfg.clip_percentiles),
        source_format=cfg.format,
        source=str(Path(table.source).absolute()),
        illumination=table.illumination
        or {"applied": False, "why": f"the {cfg.format} layout has no illumination functions"},
        morphoscale_version=__version__,
    )


def _finalize(part: Path, table: SourceTable, done: dict, channels: list[str]) -> None:
    import zarr

    n = len(table.sites)
    group = zarr.open_group(part, mode="r+")
    ranges = np.array([done[i] for i in range(n)], dtype=np.float32).reshape(n, len(channels), 2)
    rng = group.create_array(
        "intensity_range",
        shape=ranges.shape,
        chunks=ranges.shape,
        dtype="float32",
        overwrite=True,
        dimension_names=RANGE_DIMENSIONS,
    )
    rng[:] = ranges
    sites = table.sites.copy()
    sites.columns = [str(c) for c in sites.columns]
    # Source paths are kept (as `source_<channel>`, absolute, so that a store read from
    # anywhere still names its images) for provenance.
    for c in channel_path_columns(sites) + [c for c in sites.columns if c.startswith(ILLUM_PREFIX)]:
        sites[c] = [str(Path(p).absolute()) for p in sites[c]]
    sites = sites.rename(columns={c: "source_" + c[len("path_") :] for c in channel_path_columns(sites)})
    write_site_table(group, sites)
    group.attrs.update(complete=True, n_sites=n)
