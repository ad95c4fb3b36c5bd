"""One process per core over independent jobs, or in-process when one worker is asked for."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


@contextmanager
def process_map(
    fn: Callable, jobs: Iterable, workers: int, initializer: Callable, initargs: tuple, chunksize: int = 1
) -> Iterator[Iterator]:
    """Results of fn(job) in completion order. Forked workers (zarr resets its event loop in a
    forked child); the pool is started before the caller starts any thread (a progress bar),
    and is torn down on any exit, an interrupt included."""
    if workers <= 1:
        initializer(*initargs)
        yield map(fn, jobs)
        return
    pool = mp.get_context("fork").Pool(workers, initializer=initializer, initargs=initargs)
    try:
        yield pool.imap_unordered(fn, jobs, chunksize=chunksize)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
