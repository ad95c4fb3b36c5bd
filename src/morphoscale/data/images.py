"""Decoding single-channel microscopy images and scaling them to the store's dtype.

uint16 -> uint8 scaling, per image and channel (the documented rule, exact):
    lo, hi = numpy.percentile(x, [p_lo, p_hi])        # method="linear"
    y = clip(floor((x - lo) / (hi - lo) * 255 + 0.5), 0, 255)   # computed in float64
and y = 0 everywhere when hi == lo. uint8 input is stored unchanged.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numba
import numpy as np

from ..errors import InputError

TIFF_SUFFIXES = {".tif", ".tiff"}
SUPPORTED_DTYPES = (np.uint8, np.uint16)


def read_image(path: str | Path) -> np.ndarray:
    """Decode one single-channel image (PNG/JPEG via Pillow, TIFF via tifffile) to a 2-D array."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im)
    except FileNotFoundError:
        raise InputError(f"{path}: image file not found") from None
    except Exception as e:  # decoders raise many types for corrupt files
        raise InputError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a single-channel 2-D image, got shape {arr.shape}")
    if arr.dtype not in SUPPORTED_DTYPES:
        raise InputError(f"{path}: unsupported pixel type {arr.dtype} (expected uint8 or uint16)")
    return arr


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


def _png_ihdr(head: bytes) -> tuple[tuple[int, int], int, int] | None:
    """(height, width), bit depth and colour type from a PNG's first 33 bytes; None if not a PNG."""
    if len(head) < 33 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return (int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")), head[24], head[25]


def _png_header(path: Path) -> tuple[tuple[int, int], np.dtype]:
    """Shape and dtype from a PNG's IHDR chunk (33 bytes; Pillow's open costs ~20x more)."""
    with open(path, "rb") as f:
        ihdr = _png_ihdr(f.read(33))
    if ihdr is None:
        raise InputError(f"{path}: cannot read image (not a PNG file)")
    (height, width), depth, color = ihdr
    if color != 0:
        raise InputError(f"{path}: expected a single-channel image, got a {PNG_COLOR_TYPES.get(color, color)} PNG")
    if depth not in (8, 16):
        raise InputError(f"{path}: unsupported pixel type ({depth}-bit PNG; expected 8 or 16 bits)")
    return (height, width), np.dtype(np.uint8 if depth == 8 else np.uint16)


def _tiff_header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype from a classic TIFF's first IFD (a few hundred bytes; tifffile's open
    costs ~0.5 ms a file, 5% of a JUMP ingest). None for anything but the plain case (BigTIFF,
    several samples, a sample format other than unsigned integers): tifffile decides those."""
    import struct

    with open(path, "rb") as f:
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
        entries = f.read(12 * n)
    if len(entries) < 12 * n:
        return None
    tags = {}
    for k in range(n):
        tag, typ, count = struct.unpack_from(order + "HHI", entries, 12 * k)
        if typ == 3 and count == 1:
            tags[tag] = struct.unpack_from(order + "H", entries, 12 * k + 8)[0]
        elif typ == 4 and count == 1:
            tags[tag] = struct.unpack_from(order + "I", entries, 12 * k + 8)[0]
        elif tag in (256, 257, 258, 277, 339):
            return None  # several samples per pixel, or an unusual type
    if tags.get(277, 1) != 1 or tags.get(339, 1) != 1 or 256 not in tags or 257 not in tags:
        return None
    bits = tags.get(258, 1)
    if bits not in (8, 16):
        return None
    return tuple(s for s in (tags[257], tags[256]) if s != 1), np.dtype(np.uint8 if bits == 8 else np.uint16)


def read_image_header(path: str | Path) -> tuple[tuple[int, int], np.dtype]:
    """Shape and dtype without decoding pixels (for validating a whole screen quickly)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            return _png_header(path)
        if path.suffix.lower() in TIFF_SUFFIXES:
            head = _tiff_header(path)
            if head is not None:
                shape, dtype = head
            else:
                import tifffile

                with tifffile.TiffFile(path) as tf:
                    page = tf.pages[0]
                    shape, dtype = tuple(s for s in page.shape if s != 1), np.dtype(page.dtype)
        else:
            from PIL import Image

            with Image.open(path) as im:
                w, h = im.size
                bands = len(im.getbands())
                mode = im.mode
            if bands != 1:
                raise InputError(f"{path}: expected a single-channel image, got mode {mode}")
            dtype = {"L": np.uint8, "P": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I": np.int32}.get(mode)
            dtype = np.dtype(dtype) if dtype is not None else np.dtype("float32")
            shape = (h, w)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: image file not found") from None
    except Exception as e:
        raise InputError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    if len(shape) != 2:
        raise InputError(f"{path}: expected a single-channel 2-D image, got shape {shape}")
    if dtype not in SUPPORTED_DTYPES:
        raise InputError(f"{path}: unsupported pixel type {dtype} (expected uint8 or uint16)")
    return shape, dtype


@numba.njit(cache=True, nogil=True)
def _histogram(flat, n_levels):
    counts = np.zeros(n_levels, np.int64)
    for v in flat:
        counts[v] += 1
    return counts


@numba.njit(cache=True, nogil=True)
def _apply_lut(flat, lut, out):
    for i in range(flat.size):
        out[i] = lut[flat[i]]
    return out


def percentiles_uint(x: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    """numpy.percentile(x, q) (linear method), exactly, for unsigned integer images via a histogram.

    A histogram and a cumulative count replace a sort: O(n + 65536) instead of O(n log n).
    (numba loops: numpy's bincount and fancy indexing first cast the pixels to int64,
    which made scaling a quarter of ingest's time.)
    """
    flat = np.ascontiguousarray(x).ravel()
    counts = _histogram(flat, 1 << (8 * x.dtype.itemsize))
    cum = np.cumsum(counts)
    n = flat.size
    out = []
    for p in q:
        pos = (n - 1) * (p / 100.0)
        k = int(np.floor(pos))
        frac = pos - k
        # value of the i-th smallest element: first v with cum[v] > i
        lo_v = int(np.searchsorted(cum, k, side="right"))
        hi_v = int(np.searchsorted(cum, min(k + 1, n - 1), side="right"))
        out.append(lo_v + (hi_v - lo_v) * frac)
    return out[0], out[1]


def scale_to_uint8(x: np.ndarray, clip: tuple[float, float], out: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """Percentile-clip a uint16 image to uint8 by the rule in the module docstring; uint8 passes
    through. `out`: a C-contiguous uint8 array of x's shape to write into (no new array)."""
    if out is None:
        out = np.empty(x.shape, np.uint8)
    elif out.shape != x.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {x.shape}")
    if x.dtype == np.uint8:
        out[...] = x
        return out, 0.0, 255.0
    lo, hi = percentiles_uint(x, clip)
    if hi <= lo:
        out[...] = 0
        return out, lo, hi
    # A lookup table over every possible input value: exact and faster than float math per pixel.
    levels = np.arange(1 << (8 * x.dtype.itemsize), dtype=np.float64)
    lut = np.clip(np.floor((levels - lo) / (hi - lo) * 255.0 + 0.5), 0, 255).astype(np.uint8)
    _apply_lut(np.ascontiguousarray(x).ravel(), lut, out.reshape(-1))
    return out, lo, hi


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...], dtype) -> np.ndarray:
    """One reused decode buffer per thread: a fresh 2 MB array per plane cost ~2,000 page
    faults (1-2 ms a JUMP site)."""
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != np.dtype(dtype):
        buf = _SCRATCH.buf = np.empty(shape, dtype)
    return buf


def read_into(path: str | Path, out: np.ndarray, clip: tuple[float, float]) -> tuple[float, float]:
    """Decode one image into `out` (a C-contiguous plane of the site being written, uint8 or
    uint16), scaled as `to_store_dtype` would; returns the (lo, hi) it was scaled with.

    A TIFF of the plane's shape is decoded by tifffile straight into the plane (uint16 kept) or
    into one buffer that is scaled into it (uint16 -> uint8): no intermediate copies, which
    were a tenth of a JUMP site's ingest; a single-channel PNG likewise by libpng. Anything
    else goes through `read_image`, whose errors name the file."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                fits = len(tf.pages) == 1 and tuple(s for s in page.shape if s != 1) == out.shape and np.dtype(page.dtype) in SUPPORTED_DTYPES
                if fits and np.dtype(page.dtype) == out.dtype:
                    page.asarray(out=out.reshape(page.shape))
                    return 0.0, float(np.iinfo(out.dtype).max)
                if fits and out.dtype == np.uint8:
                    x = page.asarray(out=_scratch(page.shape, page.dtype))
                    _, lo, hi = scale_to_uint8(x.reshape(out.shape), clip, out)
                    return lo, hi
        except Exception:  # noqa: BLE001 - the general path below reports it, naming the file
            pass
    elif path.suffix.lower() == ".png":
        got = _png_into(path, out, clip)
        if got is not None:
            return got
    x = read_image(path)
    if x.shape != out.shape:
        raise InputError(f"{path}: image is {x.shape[0]}x{x.shape[1]}, expected {out.shape[0]}x{out.shape[1]}")
    y, lo, hi = to_store_dtype(x, str(out.dtype), clip)
    out[...] = y
    return lo, hi


def _png_into(path: Path, out: np.ndarray, clip: tuple[float, float]) -> tuple[float, float] | None:
    """A single-channel 8- or 16-bit PNG of the plane's shape, decoded by libpng (imagecodecs)
    straight into the plane or into one buffer scaled into it: 18% faster than Pillow on the
    RxRx-layout screen. None for anything else, or on any error: `read_image` then decides
    and names the file."""
    import imagecodecs

    try:
        data = path.read_bytes()
        ihdr = _png_ihdr(data[:33])
        if ihdr is None or ihdr[0] != out.shape or ihdr[2] != 0 or ihdr[1] not in (8, 16):
            return None
        if (ihdr[1] == 8) == (out.dtype == np.uint8):
            imagecodecs.png_decode(data, out=out)
            return 0.0, float(np.iinfo(out.dtype).max)
        if out.dtype == np.uint8:
            x = imagecodecs.png_decode(data, out=_scratch(out.shape, np.uint16))
            _, lo, hi = scale_to_uint8(x, clip, out)
            return lo, hi
    except Exception:  # noqa: BLE001 - the general path reports it, naming the file
        return None
    return None


def to_store_dtype(x: np.ndarray, dtype: str, clip: tuple[float, float]) -> tuple[np.ndarray, float, float]:
    if dtype == "uint8":
        return scale_to_uint8(x, clip)
    if dtype == "uint16":
        return x.astype(np.uint16, copy=False), 0.0, float(np.iinfo(x.dtype).max)
    raise ValueError(dtype)
