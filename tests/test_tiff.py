"""The lean TIFF reader gives tifffile's pixels for the plain case and declines everything else."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from morphoscale.data.examples import JUMP_FIELD_FILES
from morphoscale.data.tiff import plain_tiff_into


def _into_new(path, dtype=None):
    """plain_tiff_into with a fresh destination of the page's own dtype (or None if `dtype` differs)."""
    made = []

    def destination(page_dtype):
        if dtype is not None and page_dtype != dtype:
            return None
        with tifffile.TiffFile(path) as tf:
            made.append(np.full(tf.pages[0].shape, 7, page_dtype))
        return made[-1]

    got = plain_tiff_into(path, destination)
    assert got is None or got is made[-1]  # decoded in place, never a new array
    return got


def _image(dtype, shape=(37, 29), seed=0):
    rng = np.random.default_rng(seed)
    # smooth plus noise, so that LZW and Deflate have runs to find, and the predictor matters
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    top = np.iinfo(dtype).max
    x = (yy * 31 + xx * 17) % (top // 2) + rng.integers(0, 50, shape)
    return x.astype(dtype)


PLAIN = [
    ("uint16 uncompressed", np.uint16, {}),
    ("uint8 uncompressed", np.uint8, {}),
    ("uint16 LZW, one strip", np.uint16, {"compression": "lzw", "rowsperstrip": 37}),
    ("uint16 LZW, strips of 5 rows", np.uint16, {"compression": "lzw", "rowsperstrip": 5}),
    ("uint8 LZW, strips of 1 row", np.uint8, {"compression": "lzw", "rowsperstrip": 1}),
    (
        "uint16 Deflate with the horizontal predictor",
        np.uint16,
        {"compression": "zlib", "predictor": True, "rowsperstrip": 8},
    ),
    ("uint8 LZW with the horizontal predictor", np.uint8, {"compression": "lzw", "predictor": True}),
    ("uint16 with a description", np.uint16, {"compression": "lzw", "description": "a microscope wrote this"}),
    ("uint16 min-is-white", np.uint16, {"photometric": "miniswhite"}),
]


@pytest.mark.parametrize("name, dtype, kwargs", PLAIN, ids=[p[0] for p in PLAIN])
def test_plain_tiffs_decode_to_tifffiles_pixels(tmp_path, name, dtype, kwargs):
    x = _image(dtype)
    tifffile.imwrite(tmp_path / "x.tif", x, **kwargs)
    got = _into_new(tmp_path / "x.tif")
    assert got is not None, f"{name}: the plain case was handed to tifffile"
    np.testing.assert_array_equal(got, tifffile.imread(tmp_path / "x.tif"))


OTHER = [
    ("big-endian", np.uint16, {"byteorder": ">"}),
    ("BigTIFF", np.uint16, {"bigtiff": True}),
    ("tiled", np.uint16, {"tile": (16, 16)}),
    ("zstd", np.uint16, {"compression": "zstd"}),
    ("int16", np.int16, {}),
    ("float32", np.float32, {}),
    ("RGB", np.uint8, {"photometric": "rgb", "shape": (37, 29, 3)}),
    ("two pages", np.uint16, {"shape": (2, 37, 29)}),
    ("ImageJ stack", np.uint16, {"imagej": True, "shape": (3, 37, 29)}),
    ("ImageJ single plane", np.uint16, {"imagej": True}),
]


@pytest.mark.parametrize("name, dtype, kwargs", OTHER, ids=[o[0] for o in OTHER])
def test_other_tiffs_are_left_to_tifffile(tmp_path, name, dtype, kwargs):
    shape = kwargs.pop("shape", (37, 29))
    x = (np.arange(np.prod(shape)) % 200).reshape(shape).astype(dtype)
    tifffile.imwrite(tmp_path / "x.tif", x, **kwargs)
    assert _into_new(tmp_path / "x.tif") is None


def test_broken_or_declined_files_give_none(tmp_path):
    x = _image(np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", x, compression="lzw")
    data = (tmp_path / "x.tif").read_bytes()
    with tifffile.TiffFile(tmp_path / "x.tif") as tf:
        start = tf.pages[0].dataoffsets[0]
    cut = tmp_path / "cut.tif"
    for body in (data[:4], data[:100], data[: start + 40] + bytes(len(data) - start - 40)):
        cut.write_bytes(body)
        assert _into_new(cut) is None
    assert _into_new(tmp_path / "x.tif", dtype=np.uint8) is None  # the destination declined
    wrong = plain_tiff_into(tmp_path / "x.tif", lambda dt: np.zeros((29, 37), dt))
    assert wrong is None  # a destination of another shape is never written as if it fit


def test_the_real_jump_field_takes_the_plain_path(examples_dir):
    field = examples_dir / "jump-pilot-field"
    for name in JUMP_FIELD_FILES.values():
        got = _into_new(field / name)
        assert got is not None
        np.testing.assert_array_equal(got, tifffile.imread(field / name))
