"""Outputs that are either complete or absent.

Files are written to a temporary name in the same folder, fsynced and renamed
into place; a folder (an image store) is built under `<name>.partial` and
renamed when complete, so a killed job never leaves a result that looks done.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import InputError, OutputExistsError

# The file inside every folder output that says what wrote it: --overwrite removes a folder only
# when it says the same kind of output (a user's folder given as --out by mistake is never deleted).
OUTPUT_MARK = ".morphoscale.json"
IMAGE_STORE, TRAINING_RUN, BENCH_FOLDER, RUN_FOLDER = "image store", "training run", "bench folder", "run folder"


def mark_output(folder: Path, kind: str) -> None:
    """Say in a folder output what kind of output it is (an image store, a training run, ...)."""
    write_text(Path(folder) / OUTPUT_MARK, json.dumps({"kind": kind}) + "\n")


def output_kind(folder: Path) -> str | None:
    return read_record(Path(folder) / OUTPUT_MARK).get("kind")


def check_replaceable(path: Path, kind: str | None = None) -> None:
    """What --overwrite may remove: a file output replaces a file (never a folder); a folder
    output replaces an empty folder or one marked as the same kind of output."""
    path = Path(path)
    if kind is None:
        if path.is_dir() and not path.is_symlink():
            raise InputError(f"{path}: is a folder; --overwrite replaces a file, never a folder")
        return
    if path.is_symlink() or not path.is_dir():
        raise InputError(f"{path}: is not a folder; --overwrite replaces only one of morphoscale's {kind}s")
    if any(path.iterdir()) and output_kind(path) != kind:
        raise InputError(
            f"{path}: not one of morphoscale's {kind}s (no {OUTPUT_MARK} saying so); --overwrite never deletes "
            "other folders: remove it yourself or choose another output"
        )


def check_output(path: Path, overwrite: bool, kind: str | None = None) -> None:
    """Refuse an existing output unless overwriting (and then only one the same kind of verb
    wrote: see check_replaceable); fail early on an unwritable folder. `kind` names a folder
    output; None, a file."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{path}: output exists; pass --overwrite to replace it")
        check_replaceable(path, kind)
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


@contextmanager
def atomic_files(paths: list[Path], overwrite: bool = False) -> Iterator[list[Path]]:
    """Several files that belong together (a map and its wells): temporaries written, then
    all renamed into place, or none. Old versions are moved aside first and put back if a
    rename fails, so a failure never leaves one new file beside another's old version."""
    paths = [Path(p) for p in paths]
    for p in paths:
        check_output(p, overwrite)
    tmps = [p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in paths]
    olds = [p.with_name(f".{p.name}.old-{os.getpid()}") for p in paths]
    aside, placed = set(), set()
    try:
        yield tmps
        for t in tmps:
            with open(t, "rb+") as f:
                os.fsync(f.fileno())
        for i, (p, t, o) in enumerate(zip(paths, tmps, olds)):
            if p.exists():
                os.replace(p, o)
                aside.add(i)
            os.replace(t, p)
            placed.add(i)
        fsync_dir(paths[0].parent)
    except BaseException as e:
        for i in reversed(range(len(paths))):  # the new ones out, the old ones back
            if i in placed:
                paths[i].unlink(missing_ok=True)
            if i in aside:
                os.rename(olds[i], paths[i])
        for t in tmps:
            remove(t)
        if isinstance(e, OSError):
            raise InputError(os_error_message(paths[0], e)) from None
        raise
    for o in olds:
        remove(o)


def read_record(path: Path) -> dict:
    """A JSON record (a stage record, a partial folder's manifest); {} when it is not there,
    torn by a kill, or not an object: nothing in it can be trusted then."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


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
        old = read_record(manifest)
        if {k: old.get(k) for k in settings} != settings or "started" not in old:
            shutil.rmtree(part)
    if not part.exists():
        part.mkdir(parents=True)
        record = {**settings, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "morphoscale_version": __version__}
        try:
            write_text(manifest, json.dumps(record))
        except BaseException:  # disk full, read-only: nothing is left behind
            shutil.rmtree(part, ignore_errors=True)
            raise
    return part, json.loads(manifest.read_text())["started"]


def commit_dir(partial: Path, final: Path) -> None:
    """Move a finished folder into place (replacing an old one only after it is done). A
    rename that fails leaves the old folder where it was and the finished one for a resume."""
    final = Path(final)
    old = None
    try:
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(partial, final)
        fsync_dir(final.parent)
    except OSError as e:
        if old is not None and old.exists() and not final.exists():
            os.rename(old, final)
        raise InputError(os_error_message(final, e)) from None
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
