"""What every reader returns, and the checks shared by all of them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import InputError, Problems, why
from ..images import read_image_header
from ..sitetable import PATH_PREFIX

ILLUM_PREFIX = "illum_"


@dataclass
class SourceTable:
    """A validated site table plus the image file of every (site, channel)."""

    sites: pd.DataFrame  # site-table columns + one `path_<channel>` column per channel
    channels: list[str]
    source: str  # what was read, for provenance
    # Set by `check_images` once every header agrees.
    image_shape: tuple[int, int] | None = None
    image_dtype: np.dtype | None = None
    # Illumination correction: per channel an `illum_<channel>` column of functions to divide
    # by (JUMP's .npy files), and what the store's attrs say about it.
    illumination: dict | None = None

    def paths(self, i: int) -> list[str]:
        return [self.sites.at[i, PATH_PREFIX + ch] for ch in self.channels]

    def illum_paths(self, i: int) -> list[str | None]:
        return [
            self.sites.at[i, ILLUM_PREFIX + ch] if ILLUM_PREFIX + ch in self.sites.columns else None
            for ch in self.channels
        ]


def table_kind(path: Path) -> str:
    """parquet, tsv or csv, by the file's suffix (gzip allowed): the one rule every table reader follows."""
    name = Path(path).name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "tsv" if name.removesuffix(".gz").endswith((".tsv", ".txt")) else "csv"


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or TSV (by suffix, gzip allowed) or a parquet table, read as strings, so that no
    value is silently reinterpreted (the Cell Painting Gallery ships load_data as all three)."""
    path = Path(path)
    kind = table_kind(path)
    try:
        if kind == "parquet":
            return _parquet_as_strings(path)
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a table") from None
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError, ValueError) as e:
        raise InputError(f"{path}: cannot parse as a table ({why(e)})") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None


def _parquet_as_strings(path: Path) -> pd.DataFrame:
    """Every column as text the way a CSV reader would see it: missing values become ''."""
    table = pd.read_parquet(path)
    out = pd.DataFrame(index=table.index)
    for col in table.columns:
        vals = table[col]
        text = vals.astype("string")
        if pd.api.types.is_float_dtype(vals.dtype):  # 3.0 -> '3' as a CSV would have it
            whole = vals.notna() & (vals % 1 == 0)
            text = text.where(~whole, vals.where(whole).astype("Int64").astype("string"))
        out[str(col)] = text.fillna("").astype(object)
    return out


def first_file(folder: Path, names) -> Path | None:
    """The first of `names` that is a file in `folder` (the forms a source ships a table in)."""
    return next((folder / n for n in names if (folder / n).is_file()), None)


REMOTE_PREFIXES = ("s3://", "gs://", "http://", "https://")


def locate(value: str, folder: Path, path_map: dict[str, str] | None = None) -> Path:
    """A path as a source table spells it, made local: the longest matching `path_map` prefix is
    replaced by its local folder; a relative path is relative to the table's `folder`. A remote
    path that no prefix maps is refused, naming the option that maps it."""
    value = str(value).strip()
    for prefix in sorted(path_map or {}, key=len, reverse=True):
        if value.startswith(prefix):
            value = str(Path(path_map[prefix]) / value[len(prefix) :].lstrip("/"))
            break
    if value.startswith(REMOTE_PREFIXES):
        raise InputError(
            f"{value}: a remote path; copy the images here and map the prefix with --path-map PREFIX=LOCAL_DIR (config key path_map)"
        )
    p = Path(value)
    return p if p.is_absolute() else folder / p


SLOW_HEADER_SECONDS = 0.001  # per file: a network filesystem, whose latency threads hide


def check_images(
    table: SourceTable, problems: Problems, file: str, workers: int = 8
) -> tuple[tuple[int, int], np.dtype] | None:
    """Read every image header; add a problem for each missing/unreadable file or shape mismatch.

    Returns the common (height, width) and dtype when all agree.
    """
    sites = table.sites
    paths = {ch: sites[PATH_PREFIX + ch].to_numpy() for ch in table.channels}
    jobs = [(i, ch, paths[ch][i]) for i in range(len(sites)) for ch in table.channels]

    def headers(batch):
        out = []
        for job in batch:
            try:
                out.append((job, read_image_header(job[2]), None))
            except InputError as e:
                out.append((job, None, str(e)))
        return out

    # Threads hide a network filesystem's latency, but on a local disk they only contend for
    # the GIL (960 JUMP headers: 60-100 ms in one thread, 110-150 ms in 8). So the first
    # batch is read in this thread, and the rest in threads only if that was slow. Batches
    # keep the executor's own cost (a lock and a future per task, 70 us) from outweighing
    # a 33-byte header read.
    batches = [jobs[k : k + 64] for k in range(0, len(jobs), 64)]
    t0 = time.perf_counter()
    results = headers(batches[0]) if batches else []
    if (time.perf_counter() - t0) / max(len(results), 1) < SLOW_HEADER_SECONDS:
        for batch in batches[1:]:
            results += headers(batch)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results += [r for batch in pool.map(headers, batches[1:]) for r in batch]

    shapes: dict[tuple, int] = {}
    per_site: dict[int, set] = {}
    for (i, ch, p), hdr, err in results:
        if err is not None:
            problems.add(file, f"site {sites.at[i, 'site_id']} channel {ch}: {err}")
            continue
        shapes[hdr] = shapes.get(hdr, 0) + 1
        per_site.setdefault(i, set()).add(hdr)
    for i, hdrs in per_site.items():
        if len(hdrs) > 1:
            desc = ", ".join(f"{s[0]}x{s[1]} {d}" for s, d in sorted(hdrs, key=str))
            problems.add(file, f"site {sites.at[i, 'site_id']}: channels of different shapes or types ({desc})")
    if len(shapes) > 1:
        common = max(shapes, key=shapes.get)
        for (i, ch, p), hdr, err in results:
            if hdr is not None and hdr != common and len(per_site.get(i, ())) == 1:
                problems.add(
                    file,
                    f"{p}: image is {hdr[0][0]}x{hdr[0][1]} {hdr[1]}, the rest of the screen is {common[0][0]}x{common[0][1]} {common[1]}",
                )
        return None
    return next(iter(shapes)) if shapes else None


def read_illumination(path: str | Path) -> np.ndarray:
    """An illumination function (a 2-D float .npy, CellProfiler's CorrectIlluminationCalculate
    as JUMP ships it), as float32; a one-line error naming the file otherwise."""
    try:
        f = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: illumination function not found (or pass --no-illum)") from None
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a .npy illumination function ({why(e)})") from None
    if f.ndim != 2 or f.dtype.kind != "f":
        raise InputError(f"{path}: an illumination function is a 2-D float array, this is {f.ndim}-D {f.dtype}")
    if not np.isfinite(f).all() or f.min() <= 0:
        raise InputError(f"{path}: the illumination function has values that are not finite and positive")
    return f.astype(np.float32, copy=False)


def check_illumination(table: SourceTable, problems: Problems) -> None:
    """Each distinct illumination function once: readable, and of the images' shape."""
    cols = [c for c in table.sites.columns if c.startswith(ILLUM_PREFIX)]
    for path in pd.unique(table.sites[cols].to_numpy().ravel()) if cols else ():
        try:
            f = read_illumination(path)
        except InputError as e:
            problems.add(table.source, str(e))
            continue
        if f.shape != tuple(table.image_shape):
            problems.add(
                table.source,
                f"{path}: the illumination function is {f.shape[0]}x{f.shape[1]}, the images are "
                f"{table.image_shape[0]}x{table.image_shape[1]}",
            )
