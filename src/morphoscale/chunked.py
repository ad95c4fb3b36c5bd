"""A resumable job over the sites of a store, in chunks (embed, features): each finished
chunk is an array landed atomically in `OUT.partial/`, which is kept across an interruption
only when it was made with the same settings; the output is assembled from the chunks and
the folder removed."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .io import open_partial


def chunk_path(part: Path, i: int) -> Path:
    return Path(part) / f"chunk{i:06d}.npy"


def save_chunk(part: Path, i: int, result: np.ndarray) -> None:
    """One finished chunk (as float32), landed atomically: a killed write leaves no chunk, a
    failed one (a full disk) no temporary and one line."""
    from .errors import InputError
    from .io import os_error_message

    final = chunk_path(part, i)
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, result.astype(np.float32))
        os.replace(tmp, final)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise InputError(os_error_message(final, e)) from None
        raise


class ChunkedJob:
    """`n_items` sites in chunks of `chunk_size`, resumable into `out`'s partial folder."""

    def __init__(self, out: Path, settings: dict, n_items: int, chunk_size: int):
        self.part, self.started = open_partial(out, settings)
        self.chunks = [(a, min(a + chunk_size, n_items)) for a in range(0, n_items, chunk_size)]
        self.n_items = n_items

    def todo(self, rank: int = 0, world: int = 1) -> list[tuple[int, int, int]]:
        """(chunk, first site, end) of the unfinished chunks this rank of `world` does."""
        return [(i, a, b) for i, (a, b) in enumerate(self.chunks) if not chunk_path(self.part, i).exists()][rank::world]

    def n_done(self, todo: list[tuple[int, int, int]]) -> int:
        return self.n_items - sum(b - a for _, a, b in todo)

    def save(self, i: int, result: np.ndarray) -> None:
        save_chunk(self.part, i, result)

    def load(self, i: int, mmap: bool = False) -> np.ndarray:
        return np.load(chunk_path(self.part, i), mmap_mode="r" if mmap else None)

    @contextmanager
    def working(self):
        """The chunks' work: an error or an interrupt before the first chunk is finished
        leaves no partial folder (nothing in it a resume could use)."""
        try:
            yield self
        except BaseException:
            if not any(self.part.glob("chunk*.npy")):
                shutil.rmtree(self.part, ignore_errors=True)
            raise

    def finish(self) -> None:
        """The output is in place: the chunks are no longer needed."""
        shutil.rmtree(self.part)
