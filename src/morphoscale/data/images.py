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
from .tiff import plain_tiff_into, tiff_header

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


def read_image_header(path: str | Path) -> tuple[tuple[int, int], np.dtype]:
    """Shape and dtype without decoding pixels (for validating a whole screen quickly)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            return _png_header(path)
        if path.suffix.lower() in TIFF_SUFFIXES:
            head = tiff_header(path)
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
def _histogram_into(flat, counts):
    counts[:] = 0
    for v in flat:
        counts[v] += 1


@numba.njit(cache=True, nogil=True)
def _ranked_values(counts, ranks):
    """The values of the given ranks (ascending, 0-based) of the pixels counted in `counts`:
    for each rank k, the first value v whose cumulative count exceeds k."""
    out = np.empty(ranks.size, np.int64)
    seen, j = 0, 0
    for v in range(counts.size):
        seen += counts[v]
        while j < ranks.size and ranks[j] < seen:
            out[j] = v
            j += 1
        if j == ranks.size:
            break
    return out


@numba.njit(cache=True, nogil=True)
def _lut_into(lut, lo, hi, top):
    """lut[v] for v <= top by the documented rule, in the same float64 steps as numpy would take."""
    span = hi - lo
    for v in range(top + 1):
        y = np.floor((v - lo) / span * 255.0 + 0.5)
        lut[v] = 0 if y < 0 else (255 if y > 255 else np.uint8(y))


@numba.njit(cache=True, nogil=True)
def _apply_lut(flat, lut, out):
    for i in range(flat.size):
        out[i] = lut[flat[i]]
    return out


def _percentiles_and_top(flat: np.ndarray, q: tuple[float, float]) -> tuple[float, float, int]:
    counts = _scratch("counts", (1 << (8 * flat.itemsize),), np.int64)
    _histogram_into(flat, counts)
    n = flat.size
    ranks, fracs = [], []
    for p in q:
        pos = (n - 1) * (p / 100.0)
        k = int(np.floor(pos))
        ranks += [k, min(k + 1, n - 1)]
        fracs.append(pos - k)
    ranks.append(n - 1)  # the largest value: the table need not go past it
    order = np.argsort(ranks, kind="stable")
    values = np.empty(len(ranks), np.int64)
    values[order] = _ranked_values(counts, np.asarray(ranks, np.int64)[order])
    lo = values[0] + (values[1] - values[0]) * fracs[0]
    hi = values[2] + (values[3] - values[2]) * fracs[1]
    return float(lo), float(hi), int(values[4])


def percentiles_uint(x: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    """numpy.percentile(x, q) (linear method), exactly, for unsigned integer images via a histogram.

    A histogram and a walk over its cumulative counts replace a sort: O(n + 65536) instead
    of O(n log n). (numba loops into reused tables: numpy's bincount first casts the pixels
    to int64, and fresh 512 KB temporaries per plane cost page faults, which on this
    project's virtual machines made scaling slower than compressing.)
    """
    lo, hi, _ = _percentiles_and_top(np.ascontiguousarray(x).ravel(), q)
    return lo, hi


def scale_to_uint8(
    x: np.ndarray, clip: tuple[float, float], out: np.ndarray | None = None
) -> tuple[np.ndarray, float, float]:
    """Percentile-clip a uint16 image to uint8 by the rule in the module docstring; uint8 passes
    through. `out`: a C-contiguous uint8 array of x's shape to write into (no new array)."""
    if out is None:
        out = np.empty(x.shape, np.uint8)
    elif out.shape != x.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {x.shape}")
    if x.dtype == np.uint8:
        out[...] = x
        return out, 0.0, 255.0
    flat = np.ascontiguousarray(x).ravel()
    lo, hi, top = _percentiles_and_top(flat, clip)
    if hi <= lo:
        out[...] = 0
        return out, lo, hi
    # A lookup table over the values present: exact, and faster than float math per pixel.
    lut = _scratch("lut", (1 << (8 * x.dtype.itemsize),), np.uint8)
    _lut_into(lut, lo, hi, top)
    _apply_lut(flat, lut, out.reshape(-1))
    return out, lo, hi


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """One reused buffer of each name per thread (the decode buffer, the scaling tables): a
    fresh 2 MB array per plane cost ~2,000 page faults (1-2 ms a JUMP site)."""
    buf = getattr(_SCRATCH, name, None)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != np.dtype(dtype):
        buf = np.empty(shape, dtype)
        setattr(_SCRATCH, name, buf)
    return buf


def read_into(path: str | Path, out: np.ndarray, clip: tuple[float, float]) -> tuple[float, float]:
    """Decode one image into `out` (a C-contiguous plane of the site being written, uint8 or
    uint16), scaled as `to_store_dtype` would; returns the (lo, hi) it was scaled with.

    A plain TIFF (`tiff.plain_tiff_into`) or a single-channel PNG (libpng) of the plane's
    shape is decoded straight into the plane, or into one reused buffer that is scaled into
    it (uint16 -> uint8): no intermediate copies, which were a tenth of a JUMP site's ingest.
    Anything else goes through `read_image`, whose errors name the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    decoded = None
    if suffix in TIFF_SUFFIXES:
        decoded = plain_tiff_into(path, lambda dtype: _destination(out, dtype))
    elif suffix == ".png":
        decoded = _png_into(path, out)
    if decoded is not None:
        if decoded is out:
            return 0.0, float(np.iinfo(out.dtype).max)
        _, lo, hi = scale_to_uint8(decoded, clip, out)
        return lo, hi
    x = read_image(path)
    if x.shape != out.shape:
        raise InputError(f"{path}: image is {x.shape[0]}x{x.shape[1]}, expected {out.shape[0]}x{out.shape[1]}")
    y, lo, hi = to_store_dtype(x, str(out.dtype), clip)
    out[...] = y
    return lo, hi


def read_corrected_into(
    path: str | Path, illum: np.ndarray, out: np.ndarray, clip: tuple[float, float]
) -> tuple[float, float]:
    """`read_into` of an image divided by its illumination function first (CellProfiler's
    CorrectIlluminationApply, Divide), rounded back to the image's own integer type so that
    the scaling (and uint16's range) is the one an uncorrected image gets."""
    x = read_image(path)
    if x.shape != out.shape or x.shape != illum.shape:
        raise InputError(
            f"{path}: image is {x.shape[0]}x{x.shape[1]}, expected {out.shape[0]}x{out.shape[1]} (and its "
            f"illumination function {illum.shape[0]}x{illum.shape[1]})"
        )
    corrected = np.rint(np.divide(x, illum, dtype=np.float64))  # float64: rounding does not depend on float32 error
    np.clip(corrected, 0, np.iinfo(x.dtype).max, out=corrected)
    y, lo, hi = to_store_dtype(corrected.astype(x.dtype), str(out.dtype), clip)
    out[...] = y
    return lo, hi


def _destination(out: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """Where `read_into` decodes an image of `dtype` for the plane `out`: the plane itself,
    a reused uint16 buffer that is then scaled into a uint8 plane, or None (the general path)."""
    if dtype == out.dtype:
        return out
    if dtype == np.uint16 and out.dtype == np.uint8:
        return _scratch("decoded", out.shape, np.uint16)
    return None


def _png_into(path: Path, out: np.ndarray) -> np.ndarray | None:
    """A single-channel 8- or 16-bit PNG of the plane's shape, decoded by libpng (imagecodecs)
    into `_destination`: 18% faster than Pillow on the RxRx-layout screen. None for anything
    else, or on any error: `read_image` then decides and names the file."""
    import imagecodecs

    try:
        data = path.read_bytes()
        ihdr = _png_ihdr(data[:33])
        if ihdr is None or ihdr[0] != out.shape or ihdr[2] != 0 or ihdr[1] not in (8, 16):
            return None
        dest = _destination(out, np.dtype(np.uint8 if ihdr[1] == 8 else np.uint16))
        return None if dest is None else imagecodecs.png_decode(data, out=dest)
    except Exception:  # noqa: BLE001 - the general path reports it, naming the file
        return None


def to_store_dtype(x: np.ndarray, dtype: str, clip: tuple[float, float]) -> tuple[np.ndarray, float, float]:
    if dtype == "uint8":
        return scale_to_uint8(x, clip)
    if dtype == "uint16":
        return x.astype(np.uint16, copy=False), 0.0, float(np.iinfo(x.dtype).max)
    raise ValueError(dtype)
