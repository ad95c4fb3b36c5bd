"""What every reader returns, and the checks shared by all of them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import InputError, Problems
from ..images import read_image_header
from ..sitetable import PATH_PREFIX


@dataclass
class SourceTable:
    """A validated site table plus the image file of every (site, channel)."""

    sites: pd.DataFrame  # site-table columns + one `path_<channel>` column per channel
    channels: list[str]
    source: str  # what was read, for provenance
    # Set by `check_images` once every header agrees.
    image_shape: tuple[int, int] | None = None
    image_dtype: np.dtype | None = None

    def paths(self, i: int) -> list[str]:
        return [self.sites.at[i, PATH_PREFIX + ch] for ch in self.channels]


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (or TSV, by suffix) read as strings, so that no value is silently reinterpreted."""
    path = Path(path)
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot parse as a table ({str(e).splitlines()[0]})") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None


SLOW_HEADER_SECONDS = 0.001  # per file: a network filesystem, whose latency threads hide


def check_images(table: SourceTable, problems: Problems, file: str, workers: int = 8) -> tuple[tuple[int, int], np.dtype] | None:
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
                problems.add(file, f"{p}: image is {hdr[0][0]}x{hdr[0][1]} {hdr[1]}, the rest of the screen is {common[0][0]}x{common[0][1]} {common[1]}")
        return None
    return next(iter(shapes)) if shapes else None
