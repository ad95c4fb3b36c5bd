"""Outputs that are either complete or absent.

Files are written to a temporary name in the same folder, fsynced and renamed
into place; a folder (an image store) is built under `<name>.partial` and
renamed when complete, so a killed job never leaves a result that looks done.
"""

from __future__ import annotations

import errno
import hashlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import InputError, OutputExistsError


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing output unless overwriting; fail early on an unwritable folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{parent}: cannot create the output folder (a file is in the way)")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{parent}: cannot create the output folder ({e.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"{parent}: output folder is not writable")


def refuse_overlap(out: Path, *inputs: Path | None, option: str = "--out") -> None:
    """An output that is, holds or lies inside an input is refused (with or without
    --overwrite: overwriting it would delete the input)."""
    o = Path(out).resolve()
    for i in inputs:
        if i is None:
            continue
        p = Path(i).resolve()
        if o == p or o.is_relative_to(p) or p.is_relative_to(o):
            raise InputError(f"{option} {out}: is, holds or lies inside the input {i}; choose another output")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def os_error_message(path: Path, e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return f"{path}: no space left on the device while writing"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: permission denied while writing"
    return f"{path}: {e.strerror or e}"


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


@contextmanager
def atomic_file(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success fsync it and rename it to `path`."""
    path = Path(path)
    check_output(path, overwrite)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        remove(tmp)
        raise InputError(os_error_message(path, e)) from None
    except BaseException:
        remove(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    """A small text output (a table, a record), replaced whole or not at all."""
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(text)


def partial_dir(path: Path) -> Path:
    """Where a folder output is built before it is complete."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def open_partial(out: Path, settings: dict) -> tuple[Path, str]:
    """The folder of finished chunks for `out`, kept from an interrupted run only when it was
    made with the same settings. Returns it and the time the run first started."""
    part = partial_dir(out)
    manifest = part / "manifest.json"
    if part.exists():
        old = json.loads(manifest.read_text()) if manifest.exists() else {}
        if {k: old.get(k) for k in settings} != settings:
            shutil.rmtree(part)
    if not part.exists():
        part.mkdir(parents=True)
        manifest.write_text(json.dumps({**settings, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "morphoscale_version": __version__}))
    return part, json.loads(manifest.read_text())["started"]


def commit_dir(partial: Path, final: Path) -> None:
    """Move a finished folder into place (replacing an old one only after it is done)."""
    final = Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(partial, final)
    fsync_dir(final.parent)
    if old is not None:
        remove(old)


def remove(p: Path) -> None:
    """Remove a file, a link or a folder tree, if it is there."""
    p = Path(p)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def file_sha256(path: Path) -> str:
    """The file's SHA-256: what a result records of an input too large to copy (checkpoints, weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
