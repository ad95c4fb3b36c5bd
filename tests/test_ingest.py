"""Ingest of the real JUMP field and of RxRx / CSV fixtures: stored pixels match the source."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tifffile
from cli_helpers import run_cli
from fixtures import rxrx_path, rxrx_rows, write_rxrx_screen
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from morphoscale.data.examples import JUMP_FIELD_FILES
from morphoscale.data.images import percentiles_uint, scale_to_uint8
from morphoscale.data.store import ImageStore


def documented_uint8(x: np.ndarray, lo_p=0.1, hi_p=99.9) -> np.ndarray:
    """The scaling rule of docs/ingest.md, computed independently with np.percentile."""
    lo, hi = np.percentile(x, [lo_p, hi_p])
    y = np.floor((x.astype(np.float64) - lo) / (hi - lo) * 255.0 + 0.5)
    return np.clip(y, 0, 255).astype(np.uint8)


def test_jump_field_uint8_matches_documented_scaling(examples_dir, tmp_path, capsys):
    field = examples_dir / "jump-pilot-field"
    rc, out, err = run_cli(
        capsys, "ingest", "--config", field / "ingest.yaml", "--out", tmp_path / "jf.zarr", "--quiet"
    )
    assert rc == 0, err
    store = ImageStore(tmp_path / "jf.zarr")
    assert store.shape == (1, 5, 1080, 1080) and store.dtype == np.uint8
    assert (tmp_path / "jf.zarr" / "images" / "c.0.0.0.0").is_file()  # flat chunk names
    assert store.channels == ["DNA", "ER", "RNA", "AGP", "Mito"]
    site = store.read(0)
    for c, ch in enumerate(store.channels):
        src = tifffile.imread(field / JUMP_FIELD_FILES[ch])
        assert src.dtype == np.uint16
        np.testing.assert_array_equal(site[c], documented_uint8(src))
        lo, hi = store.intensity_range()[0, c]
        np.testing.assert_allclose([lo, hi], np.percentile(src, [0.1, 99.9]), rtol=1e-6)
    sites = store.sites
    assert sites.loc[0, "plate"] == "BR00116991" and sites.loc[0, "well"] == "A01" and sites.loc[0, "site"] == 1


def test_jump_field_uint16_is_bit_exact(examples_dir, tmp_path, capsys):
    field = examples_dir / "jump-pilot-field"
    rc, _, err = run_cli(
        capsys,
        "ingest",
        "--config",
        field / "ingest.yaml",
        "--dtype",
        "uint16",
        "--out",
        tmp_path / "jf16.zarr",
        "--quiet",
    )
    assert rc == 0, err
    store = ImageStore(tmp_path / "jf16.zarr")
    assert store.dtype == np.uint16
    for c, ch in enumerate(store.channels):
        np.testing.assert_array_equal(store.read(0)[c], tifffile.imread(field / JUMP_FIELD_FILES[ch]))


def test_rxrx_fixture_is_bit_exact(rxrx_screen, tmp_path, capsys):
    rc, _, err = run_cli(
        capsys, "ingest", "--format", "rxrx", "--source", rxrx_screen, "--out", tmp_path / "r.zarr", "--quiet"
    )
    assert rc == 0, err
    store = ImageStore(tmp_path / "r.zarr")
    rows = rxrx_rows()
    assert len(store) == len(rows) and store.channels == ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
    for i, r in enumerate(rows):
        assert store.sites.loc[i, "site_id"] == r["site_id"]
        for c in range(6):
            np.testing.assert_array_equal(store.read(i)[c], np.asarray(Image.open(rxrx_path(rxrx_screen, r, c + 1))))
    s = store.sites
    assert s["is_control"].sum() == 4 and set(s.loc[s.is_control, "perturbation_type"]) == {"control"}
    assert set(s["batch"]) == {"EXP-1", "EXP-2"} and s.loc[0, "plate"] == "EXP-1_1"


def test_csv_fixture_uint16_bit_exact_and_uint8_scaled(csv_screen, tmp_path, capsys):
    cfg = csv_screen.parent / "ingest.yaml"
    for dtype in ("uint16", "uint8"):
        out = tmp_path / f"c{dtype}.zarr"
        rc, _, err = run_cli(
            capsys, "ingest", "--config", cfg, "--dtype", dtype, "--out", out, "--quiet", "--workers", "2"
        )
        assert rc == 0, err
        store = ImageStore(out)
        table = pd.read_csv(csv_screen)
        for i in range(len(table)):
            for c, col in enumerate(["dna", "actin", "mito"]):
                src = tifffile.imread(csv_screen.parent / table.loc[i, col])
                expected = src if dtype == "uint16" else documented_uint8(src)
                np.testing.assert_array_equal(store.read(i)[c], expected)
        assert set(store.sites.perturbation_type) == {"compound", "control"}


def test_example_fly_through_csv_reader(examples_dir, tmp_path, capsys):
    fly = examples_dir / "example-fly"
    rc, _, err = run_cli(capsys, "ingest", "--config", fly / "ingest.yaml", "--out", tmp_path / "fly.zarr", "--quiet")
    assert rc == 0, err
    store = ImageStore(tmp_path / "fly.zarr")
    assert store.channels == ["DNA", "PH3", "Actin"] and len(store) == 3
    src = tifffile.imread(fly / "01_POS076_R.TIF")
    expected = src if src.dtype == np.uint8 else documented_uint8(src)
    np.testing.assert_array_equal(store.read(1)[2], expected)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 65535), min_size=1, max_size=300),
    st.floats(0, 100),
    st.floats(0, 100),
)
def test_histogram_percentiles_equal_numpy(values, p1, p2):
    x = np.array(values, dtype=np.uint16)
    got = percentiles_uint(x, (p1, p2))
    np.testing.assert_allclose(got, np.percentile(x, [p1, p2]), rtol=1e-9, atol=1e-9)


def test_flat_image_scales_to_zeros():
    y, lo, hi = scale_to_uint8(np.full((8, 8), 700, np.uint16), (0.1, 99.9))
    assert lo == hi == 700 and not y.any()


def test_killed_ingest_resumes_to_the_same_store(tmp_path):
    """SIGKILL an ingest mid-way: no complete-looking store; the re-run skips done sites and matches."""
    rows = rxrx_rows(experiments=("E1", "E2"), wells=tuple(f"B{k:02d}" for k in range(2, 22)), sites=(1, 2, 3))
    src = write_rxrx_screen(tmp_path / "big", size=256, rows=rows)
    cmd = [
        sys.executable,
        "-m",
        "morphoscale",
        "ingest",
        "--format",
        "rxrx",
        "--source",
        str(src),
        "--quiet",
        "--workers",
        "1",
    ]
    out = tmp_path / "killed.zarr"
    partial = tmp_path / "killed.zarr.partial"
    proc = subprocess.Popen(cmd + ["--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = partial / "progress.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 10:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed ingest left a store under the final name"
    assert partial.exists()
    done_before = len(log.read_text().splitlines())
    assert 10 <= done_before < len(rows)
    (partial / "images" / ".c.59.0.0.0.tmp-99999").write_bytes(b"torn")  # a chunk write the kill cut short

    res = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert not partial.exists()
    ref = tmp_path / "ref.zarr"
    assert subprocess.run(cmd + ["--out", str(ref)], capture_output=True).returncode == 0
    a, b = ImageStore(out), ImageStore(ref)
    np.testing.assert_array_equal(a.images[:], b.images[:])
    np.testing.assert_array_equal(a.intensity_range(), b.intensity_range())
    pd.testing.assert_frame_equal(a.sites, b.sites)
    # byte for byte: every file of the resumed store is the uninterrupted one's, no temporary left
    files = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert files == {p.relative_to(ref): p.read_bytes() for p in sorted(ref.rglob("*")) if p.is_file()}


def test_resume_skips_finished_sites(rxrx_screen, tmp_path, capsys, monkeypatch):
    """A partial store whose log lists sites as done: those are not decoded again."""
    from morphoscale.data import ingest_workers as ingest_mod

    out = tmp_path / "s.zarr"
    calls = []
    real = ingest_mod._ingest_site

    def boom(job):
        calls.append(job[0])
        if len(calls) == 5:
            raise KeyboardInterrupt  # stop mid-way, like Ctrl-C
        return real(job)

    monkeypatch.setattr(ingest_mod, "_ingest_site", boom)
    rc, _, _ = run_cli(
        capsys, "ingest", "--format", "rxrx", "--source", rxrx_screen, "--out", out, "--workers", "1", "--quiet"
    )
    assert rc == 130 and not out.exists()
    calls.clear()
    monkeypatch.setattr(ingest_mod, "_ingest_site", lambda job: (calls.append(job[0]), real(job))[1])
    rc, _, err = run_cli(
        capsys, "ingest", "--format", "rxrx", "--source", rxrx_screen, "--out", out, "--workers", "1", "--quiet"
    )
    assert rc == 0, err
    assert sorted(calls) == list(range(4, 16))  # the 4 finished sites were skipped


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_header_agrees_with_the_decoder(tmp_path, dtype):
    from morphoscale.data.images import read_image, read_image_header

    arr = (np.arange(30 * 41).reshape(30, 41) * 37).astype(dtype)
    Image.fromarray(arr).save(tmp_path / "x.png")
    shape, dt = read_image_header(tmp_path / "x.png")
    decoded = read_image(tmp_path / "x.png")
    assert shape == decoded.shape == (30, 41) and dt == decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, arr)


@pytest.mark.parametrize(
    "arr, kwargs",
    [
        (np.zeros((30, 41), np.uint16), {}),
        (np.zeros((30, 41), np.uint8), {"compression": "zlib"}),
        (np.zeros((30, 41), np.uint16), {"byteorder": ">"}),
        (np.zeros((30, 41), np.uint16), {"bigtiff": True}),
        (np.zeros((30, 41, 3), np.uint8), {"photometric": "rgb"}),
        (np.zeros((30, 41), np.float32), {}),
        (np.zeros((30, 41), np.int16), {}),
        (np.zeros((2, 30, 41), np.uint16), {}),
        (np.zeros((1, 41), np.uint16), {}),
        (np.zeros((300, 410), np.uint16), {"tile": (64, 64)}),
    ],
)
def test_tiff_header_agrees_with_tifffile(tmp_path, arr, kwargs):
    """The fast header path gives what tifffile gives, or hands over to it."""
    from morphoscale.data.tiff import tiff_header

    tifffile.imwrite(tmp_path / "x.tif", arr, **kwargs)
    with tifffile.TiffFile(tmp_path / "x.tif") as tf:
        page = tf.pages[0]
        expected = (tuple(s for s in page.shape if s != 1), np.dtype(page.dtype))
    fast = tiff_header(tmp_path / "x.tif")
    assert fast is None or fast == expected
    if arr.dtype in (np.uint8, np.uint16) and arr.ndim == 2 and not kwargs.get("bigtiff"):
        assert fast == expected  # the plain cases never need tifffile


def _write_image(path, x):
    if path.suffix == ".tif":
        tifffile.imwrite(path, x, compression="zlib" if x.dtype == np.uint16 else None)
    else:
        Image.fromarray(x).save(path)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_read_into_decodes_in_place_as_the_general_path_does(tmp_path, suffix):
    """The fast paths (tifffile or libpng straight into the plane) give the general path's
    pixels and the documented scaling, and hand anything they do not take (wrong shape,
    colour, corrupt data) to the general path, which names the file."""
    from morphoscale.data.images import read_image, read_into, to_store_dtype
    from morphoscale.errors import InputError

    rng = np.random.default_rng(0)
    x16 = rng.integers(0, 4000, (40, 30), dtype=np.uint16)
    x8 = rng.integers(0, 255, (40, 30), dtype=np.uint8)
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    _write_image(a, x16)
    _write_image(b, x8)
    np.testing.assert_array_equal(read_image(a), x16)
    site16, site8 = np.zeros((2, 40, 30), np.uint16), np.zeros((2, 40, 30), np.uint8)
    assert read_into(a, site16[1], (0.1, 99.9)) == (0.0, 65535.0)
    np.testing.assert_array_equal(site16[1], x16)
    lo, hi = read_into(a, site8[0], (0.1, 99.9))
    y, lo2, hi2 = to_store_dtype(x16, "uint8", (0.1, 99.9))
    np.testing.assert_array_equal(site8[0], y)
    assert (lo, hi) == (lo2, hi2)
    assert read_into(b, site8[1], (0.1, 99.9)) == (0.0, 255.0)
    np.testing.assert_array_equal(site8[1], x8)
    read_into(b, site16[0], (0.1, 99.9))  # uint8 kept as uint16 values
    np.testing.assert_array_equal(site16[0], x8)
    with pytest.raises(InputError, match=rf"a{suffix}: image is 40x30, expected 30x40"):
        read_into(a, np.zeros((30, 40), np.uint8), (0.1, 99.9))
    _write_image(tmp_path / f"rgb{suffix}", np.zeros((40, 30, 3), np.uint8))
    with pytest.raises(InputError, match=rf"rgb{suffix}: expected a single-channel 2-D image"):
        read_into(tmp_path / f"rgb{suffix}", site8[0], (0.1, 99.9))
    data = b.read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2] if suffix == ".png" else b"II*\0garbage")
    with pytest.raises(InputError, match=rf"cut{suffix}: "):
        read_into(tmp_path / f"cut{suffix}", site8[0], (0.1, 99.9))


@pytest.mark.parametrize("direct", [True, False], ids=["O_DIRECT", "refused"])
@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 70001])
def test_new_files_hold_exactly_the_bytes_written(tmp_path, monkeypatch, direct, n):
    """Whole blocks written direct plus the tail written plainly make exactly n bytes; where
    the filesystem refuses O_DIRECT (EINVAL, as tmpfs does) the same bytes are written
    plainly, and later writes stop trying."""
    import errno

    from morphoscale.data import direct_io as msio

    monkeypatch.setattr(msio, "_direct_refused", False)
    real_open = os.open
    if not direct:

        def refusing_open(path, flags, *args):
            if flags & getattr(os, "O_DIRECT", 0):
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_open(path, flags, *args)

        monkeypatch.setattr(os, "open", refusing_open)
    buf = msio.aligned_buffer(n)
    payload = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    buf[:n] = payload
    msio.write_new_file(tmp_path / "f", buf, n)
    assert (tmp_path / "f").read_bytes() == payload
    if not direct:
        assert msio._direct_refused  # one refusal is remembered


@pytest.mark.parametrize("separator", [".", "/"], ids=["flat chunk names", "nested (older stores)"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_site_chunks_are_what_zarr_reads(tmp_path, dtype, separator):
    """Chunks compressed by imagecodecs into the aligned buffer and written past the page
    cache decode with zarr's own codec to the site written, the last one written included,
    under flat chunk names (what ingest makes) or nested ones."""
    import zarr

    from morphoscale.data.direct_io import aligned_buffer
    from morphoscale.data.store import SiteChunks, blosc_codec

    group = zarr.open_group(tmp_path / "s.zarr", mode="w")
    keys = {"name": "default", "separator": separator}
    group.create_array(
        "images",
        shape=(4, 3, 37, 41),
        chunks=(1, 3, 37, 41),
        dtype=dtype,
        compressors=[blosc_codec(dtype)],
        fill_value=0,
        chunk_key_encoding=keys,
    )
    writer = SiteChunks(tmp_path / "s.zarr" / "images")
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3000 if dtype == "uint16" else 255, (4, 3, 37, 41)).astype(dtype)
    x[1] = 7  # very compressible beside noise
    buf = aligned_buffer(writer.max_chunk_bytes)
    for i in (0, 1, 3):
        writer.put(i, buf, writer.encode(x[i], buf))
    x[2] = 0  # never written: zarr's fill value
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s.zarr" / "images", mode="r")[:], x)
    assert not list((tmp_path / "s.zarr" / "images").rglob(".*tmp*"))
    assert (tmp_path / "s.zarr" / "images" / f"c{separator}3{separator}0{separator}0{separator}0").is_file()
