"""A lean reader for the plain TIFF that microscopes write: one single-channel page of
unsigned 8- or 16-bit pixels in little-endian strips, uncompressed, LZW or Deflate.

Why: for such a file tifffile spends about 2.7 ms a 1080x1080 plane on parsing every tag,
reading the strip into a fresh buffer and assembling the page, on top of 10.8 ms of LZW
decoding: a fifth of ingest's time on a JUMP screen (benchmarks/bench_ingest.py). Here the
first IFD is parsed with `struct` (only the tags that decide the pixels), and the strips
are decoded by imagecodecs, tifffile's own codecs, from the memory-mapped file (reading
2.5 MB into a buffer cost 0.8 ms a plane, mapping it 0.3) straight into the caller's
plane. Anything else (BigTIFF, big-endian, tiles, several pages or samples, ImageJ
stacks, other codecs, a strip of the wrong length) is refused, and the caller hands the
file to tifffile, whose errors name it.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TYPE_SIZES = {1: 1, 3: 2, 4: 4}  # BYTE, SHORT, LONG: the types the tags below come in
_TYPE_CODES = {1: "B", 3: "H", 4: "I"}
# ImageWidth, ImageLength, BitsPerSample, Compression, Photometric, FillOrder, StripOffsets,
# SamplesPerPixel, RowsPerStrip, StripByteCounts, Predictor, SampleFormat
_PIXEL_TAGS = {256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 317, 339}
_TILE_TAGS = {322, 323, 324, 325}
_IMAGE_DESCRIPTION = 270
_DECODERS = {1: "none", 5: "lzw", 8: "zlib", 32946: "zlib"}


@dataclass
class PlainTiff:
    """The first page of a classic TIFF, as far as its pixels go."""

    shape: tuple[int, int]
    dtype: np.dtype
    entries: dict  # tag -> (type, count, the 4 value bytes: the value, or where it is)
    single_page: bool
    tiled: bool


def _value(f, entry, order: str) -> tuple[int, ...]:
    typ, count, raw = entry
    size = _TYPE_SIZES[typ] * count
    if size <= 4:
        data = raw[:size]
    else:
        f.seek(struct.unpack(order + "I", raw)[0])
        data = f.read(size)
        if len(data) < size:
            raise ValueError("tag value past the end of the file")
    return struct.unpack(f"{order}{count}{_TYPE_CODES[typ]}", data)


def read_plain_tiff(f) -> PlainTiff | None:
    """Parse the first IFD of an open binary file; None for anything but a classic TIFF whose
    first page is one channel of uint8 or uint16 (then tifffile decides)."""
    head = f.read(8)
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        return None
    order = "<" if head[:2] == b"II" else ">"
    magic, offset = struct.unpack(order + "HI", head[2:8])
    if magic != 42:
        return None
    f.seek(offset)
    raw = f.read(2)
    if len(raw) < 2:
        return None
    (n,) = struct.unpack(order + "H", raw)
    block = f.read(12 * n + 4)
    if len(block) < 12 * n + 4:
        return None
    entries, tiled = {}, False
    for k in range(n):
        tag, typ, count = struct.unpack_from(order + "HHI", block, 12 * k)
        tiled |= tag in _TILE_TAGS
        if tag in _PIXEL_TAGS and (typ not in _TYPE_SIZES or count < 1):
            return None
        if tag in _PIXEL_TAGS or tag == _IMAGE_DESCRIPTION:
            entries[tag] = (typ, count, block[12 * k + 8 : 12 * k + 12])
    try:
        one = {t: _value(f, entries[t], order) for t in (256, 257, 258, 277, 339) if t in entries}
    except ValueError:
        return None
    if any(len(v) != 1 for v in one.values()):
        return None
    if one.get(277, (1,))[0] != 1 or one.get(339, (1,))[0] != 1 or 256 not in one or 257 not in one:
        return None
    bits = one.get(258, (1,))[0]
    if bits not in (8, 16):
        return None
    (next_ifd,) = struct.unpack_from(order + "I", block, 12 * n)
    shape = (one[257][0], one[256][0])
    dtype = np.dtype(np.uint8 if bits == 8 else np.uint16).newbyteorder(order)
    return PlainTiff(shape, dtype, entries, single_page=next_ifd == 0, tiled=tiled)


def tiff_header(path: str | Path) -> tuple[tuple[int, int], np.dtype] | None:
    """Shape and dtype from the first IFD (a few hundred bytes; tifffile's open costs ~0.5 ms
    a file, 5% of a JUMP ingest). None for anything but the plain case: tifffile decides those."""
    with open(path, "rb") as f:
        tiff = read_plain_tiff(f)
    if tiff is None:
        return None
    return tuple(s for s in tiff.shape if s != 1), tiff.dtype.newbyteorder("=")  # squeezed, as tifffile does


def plain_tiff_into(path: str | Path, destination: Callable[[np.dtype], np.ndarray | None]) -> np.ndarray | None:
    """Decode a plain TIFF (see the module docstring) into `destination(its dtype)`, a
    C-contiguous array of its shape, and return that array. None, with the array in any
    state, when the file is not that case or `destination` declines (returns None)."""
    import imagecodecs

    if sys.byteorder != "little":
        return None
    with open(path, "rb", buffering=0) as f:
        tiff = read_plain_tiff(f)
        if tiff is None or not tiff.single_page or tiff.tiled or tiff.dtype.byteorder == ">":
            return None
        out = destination(tiff.dtype)
        if out is None or out.shape != tiff.shape or out.dtype != tiff.dtype or not out.flags.c_contiguous:
            return None
        e = tiff.entries
        try:
            compression = _value(f, e[259], "<")[0] if 259 in e else 1
            predictor = _value(f, e[317], "<")[0] if 317 in e else 1
            fill_order = _value(f, e[266], "<")[0] if 266 in e else 1
            photometric = _value(f, e[262], "<")[0] if 262 in e else 1
            if _IMAGE_DESCRIPTION in e and _description_start(f, e[_IMAGE_DESCRIPTION]).startswith(b"ImageJ"):
                return None  # an ImageJ stack may keep all its planes under one IFD
            offsets = _value(f, e[273], "<")
            counts = _value(f, e[279], "<")
            rows = _value(f, e[278], "<")[0] if 278 in e else out.shape[0]
        except (KeyError, ValueError, struct.error):
            return None
        if compression not in _DECODERS or predictor not in (1, 2) or fill_order != 1 or photometric not in (0, 1):
            return None
        height = out.shape[0]
        rows = min(max(rows, 1), height)
        n_strips = -(-height // rows)
        if len(offsets) != n_strips or len(counts) != n_strips:
            return None
        if max(o + c for o, c in zip(offsets, counts)) > os.fstat(f.fileno()).st_size:
            return None  # strips past the end of the file
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        if not _decode_strips(data, offsets, counts, rows, _DECODERS[compression], out):
            return None
    finally:
        data.close()
    if predictor == 2:
        imagecodecs.delta_decode(out, axis=-1, out=out)
    return out


def _decode_strips(data: mmap.mmap, offsets, counts, rows: int, codec: str, out: np.ndarray) -> bool:
    """Decode each strip from the mapped file into its rows of `out`; False on any error."""
    import imagecodecs

    flat = out.reshape(-1).view(np.uint8)
    row_bytes = out.shape[1] * out.itemsize
    with memoryview(data) as view:
        for k, (o, c) in enumerate(zip(offsets, counts)):
            dst = flat[k * rows * row_bytes : (k + 1) * rows * row_bytes]
            try:
                if codec == "none":
                    if c < len(dst):
                        return False
                    dst[:] = view[o : o + len(dst)]
                elif len(getattr(imagecodecs, codec + "_decode")(view[o : o + c], out=dst)) != len(dst):
                    return False
            except Exception:  # noqa: BLE001 - corrupt data: tifffile decides and names the file
                return False
    return True


def _description_start(f, entry) -> bytes:
    """The first bytes of the ImageDescription tag (ASCII)."""
    _, count, raw = entry
    if count <= 4:
        return raw[:count]
    f.seek(struct.unpack("<I", raw)[0])
    return f.read(min(count, 16))
