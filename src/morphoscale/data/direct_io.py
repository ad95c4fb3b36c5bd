"""Writing a new file past the page cache (O_DIRECT), for the store's chunks: on this project's
ext4 machines it costs a tenth of the kernel CPU of a buffered write (benchmarks/bench_ingest.py)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

_DIRECT_BLOCK = 4096
_direct_refused = not hasattr(os, "O_DIRECT")


def whole_blocks(nbytes: int) -> int:
    """nbytes rounded up to whole direct-I/O blocks."""
    return -(-nbytes // _DIRECT_BLOCK) * _DIRECT_BLOCK


def aligned_buffer(nbytes: int) -> memoryview:
    """A page-aligned writable buffer of `nbytes` rounded up to whole direct-I/O blocks: an
    anonymous shared mapping, so processes forked after it write the same memory."""
    import mmap

    return memoryview(mmap.mmap(-1, whole_blocks(max(nbytes, 1))))


def write_new_file(path: Path, buf: memoryview, n: int) -> None:
    """Write buf[:n] as the new file `path`, past the page cache (O_DIRECT) where the filesystem allows.

    Why: on this project's ext4 machines a buffered write of a new 8 MB file costs 11-18 ms
    of kernel CPU (page allocation and copy), as much as compressing it; O_DIRECT costs
    0.4 ms of CPU and 3 ms of waiting for the device (benchmarks/bench_ingest.py). `buf`
    comes from `aligned_buffer`: the whole blocks go direct, the last partial block
    through the page cache. Where O_DIRECT is refused (tmpfs, some network filesystems)
    the write is a plain one, and later writes do not try again."""
    global _direct_refused
    if not _direct_refused:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            _direct_refused = True
        else:
            try:
                whole = n - n % _DIRECT_BLOCK
                done = os.write(fd, buf[:whole]) if whole else 0
                if done == whole:
                    # The tail (under one block) as a plain write: padding it and truncating
                    # afterwards made the kernel read back and zero the last block (0.6 ms).
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                    if os.write(fd, buf[whole:n]) == n - whole:
                        return
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                _direct_refused = True
            finally:
                os.close(fd)
    with open(path, "wb") as f:  # also after a short direct write: the whole file again
        f.write(buf[:n])
