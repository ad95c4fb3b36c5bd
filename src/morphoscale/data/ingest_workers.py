"""Ingest's worker side: processes decode a site's images (dividing out illumination),
scale them and compress the chunk into a shared slot; the driver writes each chunk from its
slot in a thread, logs the finished sites for resuming, and names every file that failed."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, Problems, ValidationError
from ..parallel import process_map
from .direct_io import aligned_buffer, whole_blocks
from .images import read_corrected_into, read_into, scale_to_uint8
from .readers import read_illumination
from .store import SiteChunks


class ChunkSlots:
    """Shared page-aligned buffers: a worker compresses a site into a free one and the driver
    writes the chunk from there, in a thread, while the workers decode on.

    Why: chunks are written past the page cache (`write_new_file`), and such a write waits
    for the device: 10 ms for a uint16 JUMP site with two writers at once, a tenth of a
    worker's time, during which its core idled. Made before the workers fork (an anonymous
    shared mapping and a queue of free slot numbers), so both sides see the same memory."""

    def __init__(self, n: int, nbytes: int):
        import multiprocessing as mp

        self.size = whole_blocks(nbytes)  # every slot starts on a block boundary
        self._mem = aligned_buffer(self.size * n)
        self._free = mp.get_context("fork").SimpleQueue()
        for k in range(n):
            self._free.put(k)

    def take(self) -> int:
        return self._free.get()

    def give_back(self, k: int) -> None:
        self._free.put(k)

    def buffer(self, k: int) -> memoryview:
        return self._mem[k * self.size : (k + 1) * self.size]


_W: dict = {}


def _worker_init(
    chunks: SiteChunks, dtype: str, clip: tuple[float, float], shape: tuple[int, int], slots: ChunkSlots
) -> None:
    _W.update(chunks=chunks, dtype=dtype, clip=clip, shape=shape, slots=slots, site=None)


def _illumination(path: str) -> np.ndarray:
    """A worker's illumination functions, each read once (one per plate and channel)."""
    cache = _W.setdefault("illum", {})
    if path not in cache:
        if len(cache) >= 64:
            cache.pop(next(iter(cache)))
        cache[path] = read_illumination(path)
    return cache[path]


def _read_plane(path: str, illum: str | None, plane: np.ndarray) -> list[float]:
    if illum is None:
        return [float(v) for v in read_into(path, plane, _W["clip"])]
    return [float(v) for v in read_corrected_into(path, _illumination(illum), plane, _W["clip"])]


def _ingest_site(job: tuple[int, list[str], list[str | None]]) -> tuple[int, list[list[float]], int, int, str | None]:
    """Decode a site and compress it into a free slot: (site, ranges, slot, chunk bytes, error)."""
    i, paths, illums = job
    shape = (len(paths), *_W["shape"])
    if _W["site"] is None or _W["site"].shape != shape:
        _W["site"] = np.empty(shape, _W["dtype"])  # one per worker: fresh pages cost faults
    site = _W["site"]
    try:
        ranges = [_read_plane(p, f, site[c]) for c, (p, f) in enumerate(zip(paths, illums))]
    except InputError as e:
        return i, [], -1, 0, str(e)
    slot = _W["slots"].take()
    try:
        return i, ranges, slot, _W["chunks"].encode(site, _W["slots"].buffer(slot)), None
    except BaseException:
        _W["slots"].give_back(slot)
        raise


class _Written:
    """Sites whose chunk is being written; a site counts as done (and is logged, for resuming)
    once its chunk is on disk, in the order the sites were handed over."""

    def __init__(self, done: dict, logf, bar, task):
        from collections import deque

        self.done, self.logf, self.bar, self.task = done, logf, bar, task
        self.pending: deque = deque()
        self.t0, self.k0 = time.perf_counter(), len(done)

    def settle(self, wait: bool, strict: bool = True) -> None:
        while self.pending and (wait or self.pending[0][2].done()):
            i, ranges, written = self.pending.popleft()
            if written.exception() is not None:
                if strict:
                    raise written.exception()
                continue
            self.done[i] = ranges
            self.logf.write(json.dumps({"i": i, "r": ranges}) + "\n")
            self.logf.flush()
            rate = (len(self.done) - self.k0) / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, completed=len(self.done), rate=f"{rate:.1f}")


def run_workers(todo, part: Path, cfg, shape, log: Path, done: dict, n: int, progress: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not todo:
        return
    workers = min(cfg.workers, len(todo))
    chunks = SiteChunks(part / "images")
    slots = ChunkSlots(workers + 2, chunks.max_chunk_bytes)
    init = (chunks, cfg.dtype, tuple(cfg.clip_percentiles), tuple(shape), slots)  # inherited by the forked workers
    scale_to_uint8(
        np.arange(4, dtype=np.uint16).reshape(2, 2), (0.0, 100.0)
    )  # load every numba kernel once, before forking
    failed = Problems()
    columns = (
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} sites/s"),
        TimeRemainingColumn(),
    )

    def put(i: int, slot: int, nbytes: int) -> None:
        try:
            chunks.put(i, slots.buffer(slot), nbytes)
        finally:
            slots.give_back(slot)

    # The pool forks before the writer thread or the progress bar starts a thread.
    with process_map(_ingest_site, todo, workers, _worker_init, init) as results, ThreadPoolExecutor(1) as disk:
        with open(log, "a") as logf, Progress(*columns, disable=not progress) as bar:
            written = _Written(done, logf, bar, bar.add_task("ingest", total=n, completed=len(done), rate="-"))
            try:
                for i, ranges, slot, nbytes, err in results:
                    if err is not None:
                        failed.add("", err)  # err already names the file
                        continue
                    written.pending.append((i, ranges, disk.submit(put, i, slot, nbytes)))
                    written.settle(wait=False)
            finally:  # also on an interrupt or an error: what reached the disk is kept
                written.settle(wait=True, strict=sys.exc_info()[0] is None)
    if len(failed):
        # Every undecodable file is named at once; finished sites stay in the
        # .partial store so that a re-run after fixing the files resumes.
        msg = str(ValidationError(failed.items)).replace("in the input", "decoding images")
        if len(done):
            msg += f" ({len(done)} finished sites kept in {part}; fix the files and re-run to resume)"
        else:
            shutil.rmtree(part, ignore_errors=True)
        raise InputError(msg)
