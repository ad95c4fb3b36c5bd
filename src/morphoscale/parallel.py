"""One process per core over independent jobs, or in-process when one worker is asked for."""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


def _worker_start(initializer: Callable, *initargs) -> None:
    """Workers leave Ctrl-C to the parent, which ends the pool and prints one line for it
    (else every worker printed its own KeyboardInterrupt traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler raises; pool.terminate() ends a worker
    initializer(*initargs)


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
    pool = mp.get_context("fork").Pool(workers, initializer=_worker_start, initargs=(initializer, *initargs))
    try:
        yield pool.imap_unordered(fn, jobs, chunksize=chunksize)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
