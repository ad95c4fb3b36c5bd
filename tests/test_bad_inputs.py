"""The bad-input corpus of the data layer: one-line error naming the culprit, exit 2, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import assert_one_line_error, nothing_written, run_cli
from fixtures import rxrx_path, rxrx_rows, write_metadata, write_rxrx_screen
from PIL import Image


def _rxrx(tmp: Path, rows=None, **kw) -> Path:
    return write_rxrx_screen(tmp / "src", rows=rows, **kw)


def _ingest_rxrx(src):
    return ["ingest", "--format", "rxrx", "--source", src]


def case_missing_metadata(tmp):
    src = _rxrx(tmp)
    (src / "metadata.csv").unlink()
    return _ingest_rxrx(src), ["metadata.csv", "file not found"]


def case_metadata_missing_column(tmp):
    rows = [{k: v for k, v in r.items() if k != "sirna"} for r in rxrx_rows()]
    src = _rxrx(tmp, rows=rows)
    return _ingest_rxrx(src), ["metadata.csv", "missing column 'sirna'"]


def case_duplicate_site(tmp):
    rows = rxrx_rows()
    rows[3] = dict(rows[2])
    src = _rxrx(tmp, rows=rows)
    return _ingest_rxrx(src), ["metadata.csv", "duplicate site EXP-1_1_B03_1 on lines 4, 5"]


def case_bad_well_name(tmp):
    rows = rxrx_rows()
    src = _rxrx(tmp, rows=rows)
    rows[5]["well"] = "Z99"
    write_metadata(src / "metadata.csv", rows)
    return _ingest_rxrx(src), ["metadata.csv line 7 column 'well'", "'Z99' is not a well name"]


def case_bad_site_number(tmp):
    rows = rxrx_rows()
    src = _rxrx(tmp, rows=rows)
    rows[0]["site"] = "one"
    write_metadata(src / "metadata.csv", rows)
    return _ingest_rxrx(src), ["metadata.csv line 2 column 'site'", "'one' is not a site number"]


def case_batch_without_controls(tmp):
    rows = [r for r in rxrx_rows() if not (r["experiment"] == "EXP-2" and r["well_type"] == "negative_control")]
    src = _rxrx(tmp, rows=rows)
    return _ingest_rxrx(src), ["column 'experiment'", "batch 'EXP-2' has no control wells"]


def case_rich_markup_in_a_value(tmp):
    # a value that reads as rich markup is printed as it is, not interpreted (nor a MarkupError)
    src = _rxrx(tmp)
    return _ingest_rxrx(src) + ["--control", "negative_control", "--control", "[/i]"], ["unknown control label '[/i]'"]


def case_unknown_control_label(tmp):
    src = _rxrx(tmp)
    return _ingest_rxrx(src) + ["--config", _yaml(tmp, "columns: {control_values: [negative_control, NTC]}")], [
        "column 'well_type'",
        "unknown control label 'NTC'",
    ]


def case_missing_channel_file(tmp):
    rows = rxrx_rows()
    src = _rxrx(tmp, rows=rows)
    rxrx_path(src, rows[6], 4).unlink()
    return _ingest_rxrx(src), ["C03_s1_w4.png", "image file not found", "channel RNA"]


def case_truncated_png(tmp):
    rows = rxrx_rows()
    src = _rxrx(tmp, rows=rows)
    p = rxrx_path(src, rows[1], 2)
    p.write_bytes(p.read_bytes()[:200])
    return _ingest_rxrx(src), ["B02_s2_w2.png", "cannot decode image"]


def case_not_an_image(tmp):
    rows = rxrx_rows()
    src = _rxrx(tmp, rows=rows)
    rxrx_path(src, rows[2], 1).write_text("this is not a png")
    return _ingest_rxrx(src), ["B03_s1_w1.png", "cannot read image"]


def case_channels_of_different_shapes(tmp):
    rows = rxrx_rows()
    src = _rxrx(tmp, rows=rows)
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(rxrx_path(src, rows[4], 3))
    return _ingest_rxrx(src), ["site EXP-1_1_C02_1", "channels of different shapes"]


def case_image_of_wrong_size(tmp):
    rows = rxrx_rows()
    src = _rxrx(tmp, rows=rows)
    for c in range(1, 7):
        Image.fromarray(np.zeros((80, 80), np.uint8)).save(rxrx_path(src, rows[9], c))
    return _ingest_rxrx(src), ["B02_s2_w1.png", "image is 80x80 uint8, the rest of the screen is 64x64 uint8"]


def case_rgb_png(tmp):
    rows = rxrx_rows()
    src = _rxrx(tmp, rows=rows)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(rxrx_path(src, rows[0], 5))
    return _ingest_rxrx(src), ["B02_s1_w5.png", "expected a single-channel image"]


def case_float_tiff(tmp):
    from fixtures import write_csv_screen

    csv = write_csv_screen(tmp / "c")
    tifffile.imwrite(csv.parent / "site2_actin.tif", np.zeros((48, 48), np.float32))
    return ["ingest", "--config", csv.parent / "ingest.yaml"], ["site2_actin.tif", "unsupported pixel type float32"]


def case_unknown_config_key(tmp):
    src = _rxrx(tmp)
    return _ingest_rxrx(src) + ["--config", _yaml(tmp, "dtyp: uint8")], ["ingest.yaml", "key 'dtyp': unknown key"]


def case_unknown_column_key(tmp):
    src = _rxrx(tmp)
    return _ingest_rxrx(src) + ["--config", _yaml(tmp, "columns: {perturbaton: sirna}")], [
        "ingest.yaml",
        "key 'columns.perturbaton': unknown key",
    ]


def case_wrong_type_in_config(tmp):
    src = _rxrx(tmp)
    return _ingest_rxrx(src) + ["--config", _yaml(tmp, "workers: many")], ["ingest.yaml", "key 'workers'", "'many'"]


def case_bad_clip_percentiles(tmp):
    src = _rxrx(tmp)
    return _ingest_rxrx(src) + ["--config", _yaml(tmp, "clip_percentiles: [99, 1]")], [
        "key 'clip_percentiles'",
        "need 0 <= low < high <= 100",
    ]


def case_invalid_yaml(tmp):
    src = _rxrx(tmp)
    return _ingest_rxrx(src) + ["--config", _yaml(tmp, "columns: {a: [1, 2}\n")], ["ingest.yaml line", "not valid YAML"]


def case_unknown_format(tmp):
    src = _rxrx(tmp)
    return ["ingest", "--format", "rxrx3d", "--source", src], ["key 'format'", "'rxrx3d'"]


def case_missing_format(tmp):
    src = _rxrx(tmp)
    return ["ingest", "--source", src], ["key 'format'", "required"]


def case_jump_missing_channel_column(tmp, examples_dir):
    field = examples_dir / "jump-pilot-field"
    text = (field / "load_data.csv").read_text().replace("FileName_OrigER", "FileName_OrigERR")
    (tmp / "load_data.csv").write_text(text.replace(",.,", f",{field},").replace(",.\n", f",{field}\n"))
    return [
        "ingest",
        "--format",
        "jump",
        "--source",
        tmp / "load_data.csv",
        "--platemap",
        field / "platemap.csv",
        "--no-controls-ok",
    ], ["load_data.csv", "missing column 'FileName_OrigER' for channel ER"]


def case_jump_well_not_in_platemap(tmp, examples_dir):
    field = examples_dir / "jump-pilot-field"
    (tmp / "pm.csv").write_text("well_position,broad_sample\nA02,DMSO\n")
    return [
        "ingest",
        "--format",
        "jump",
        "--source",
        field / "load_data.csv",
        "--platemap",
        tmp / "pm.csv",
        "--no-controls-ok",
    ], ["load_data.csv line 2 column 'Metadata_Well'", "well A01 is not in the platemap pm.csv"]


def case_csv_missing_path_column(tmp):
    from fixtures import write_csv_screen

    csv = write_csv_screen(tmp / "c")
    cfg = (csv.parent / "ingest.yaml").read_text().replace("Mito: mito", "Mito: mitochondria")
    (csv.parent / "ingest.yaml").write_text(cfg)
    return ["ingest", "--config", csv.parent / "ingest.yaml"], [
        "sites.csv",
        "missing path column 'mitochondria' for channel Mito",
    ]


def case_csv_without_channel_columns(tmp):
    from fixtures import write_csv_screen

    csv = write_csv_screen(tmp / "c")
    return ["ingest", "--format", "csv", "--source", csv], ["sites.csv", "needs 'channel_columns'"]


def case_remote_path_in_load_data(tmp, examples_dir):
    field = examples_dir / "jump-pilot-field"
    text = (field / "load_data.csv").read_text().replace(",.,", ",s3://cellpainting-gallery/x,", 1)
    (tmp / "load_data.csv").write_text(text)
    return [
        "ingest",
        "--format",
        "jump",
        "--source",
        tmp / "load_data.csv",
        "--platemap",
        field / "platemap.csv",
        "--no-controls-ok",
    ], ["s3://cellpainting-gallery/x", "a remote path", "--path-map PREFIX=LOCAL_DIR"]


def case_several_problems_in_one_report(tmp):
    rows = rxrx_rows()
    src = _rxrx(tmp, rows=rows)
    rows[0]["well"] = "B2x"
    rows[1]["site"] = "-"
    rows[2]["sirna"] = ""
    write_metadata(src / "metadata.csv", rows)
    return _ingest_rxrx(src), [
        "3 problems",
        "line 2 column 'well'",
        "line 3 column 'site'",
        "line 4 column 'sirna': empty value",
    ]


# Problems only a full decode can find (headers are fine); all others are found before writing.
DECODE_TIME = {"truncated_png"}
CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def _yaml(tmp: Path, text: str) -> Path:
    p = tmp / "ingest.yaml"
    p.write_text(text + "\n")
    return p


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path, capsys, request):
    fn = CASES[name]
    kwargs = (
        {"examples_dir": request.getfixturevalue("examples_dir")} if "examples_dir" in fn.__code__.co_varnames else {}
    )
    args, needles = fn(tmp_path, **kwargs)
    out = tmp_path / "out" / "store.zarr"
    rc, _, err = run_cli(capsys, *args, "--out", out, "--quiet")
    assert_one_line_error(rc, err, *needles)
    if name in DECODE_TIME:
        # Found while decoding: finished sites are kept for resuming, never under the final name.
        assert not out.exists() and "re-run to resume" in err
        assert not (Path(str(out) + ".partial") / "sites").exists()
    else:
        assert nothing_written(out)


def test_existing_output_is_refused_without_overwrite(rxrx_screen, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = run_cli(capsys, *_ingest_rxrx(rxrx_screen), "--out", out, "--quiet")
    assert_one_line_error(rc, err, "s.zarr: output exists; pass --overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    rc, _, err = run_cli(capsys, *_ingest_rxrx(rxrx_screen), "--out", out, "--quiet", "--overwrite")
    assert_one_line_error(rc, err, "s.zarr: not one of morphoscale's image stores")  # not ingest's to delete
    assert (out / "keep.txt").read_text() == "mine"
    store = tmp_path / "t.zarr"
    assert run_cli(capsys, *_ingest_rxrx(rxrx_screen), "--out", store, "--quiet")[0] == 0
    (store / "stray.txt").write_text("x")
    rc, _, err = run_cli(capsys, *_ingest_rxrx(rxrx_screen), "--out", store, "--quiet", "--overwrite")
    assert rc == 0, err  # a store ingest wrote, it replaces
    assert not (store / "stray.txt").exists() and (store / "zarr.json").exists()


def test_read_only_output_folder(rxrx_screen, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:
        # root ignores permission bits: make the access check see what a user would.
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro and mode & os.W_OK else real(p, mode))
    try:
        rc, _, err = run_cli(capsys, *_ingest_rxrx(rxrx_screen), "--out", ro / "s.zarr", "--quiet")
        assert_one_line_error(rc, err, "ro: output folder is not writable")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_output_folder_that_cannot_be_created(rxrx_screen, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    rc, _, err = run_cli(capsys, *_ingest_rxrx(rxrx_screen), "--out", tmp_path / "afile" / "s.zarr", "--quiet")
    assert_one_line_error(rc, err, "afile: cannot create the output folder")


def test_disk_full_during_ingest(rxrx_screen, tmp_path, capsys, monkeypatch):
    """ENOSPC while writing the site table: one-line error, no store under the final name."""
    import errno

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    import anndata.io

    monkeypatch.setattr(anndata.io, "write_elem", full)
    out = tmp_path / "full.zarr"
    rc, _, err = run_cli(capsys, *_ingest_rxrx(rxrx_screen), "--out", out, "--quiet", "--workers", "1")
    assert_one_line_error(rc, err, "full.zarr.partial", "no space left on the device")
    assert not out.exists()


def test_disk_full_while_writing_chunks(rxrx_screen, tmp_path, capsys, monkeypatch):
    """ENOSPC on a chunk, written by the driver while two workers decode: one-line error,
    no store under the final name."""
    import errno

    from morphoscale.data import store

    def full(path, buf, n):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "write_new_file", full)
    out = tmp_path / "full.zarr"
    rc, _, err = run_cli(capsys, *_ingest_rxrx(rxrx_screen), "--out", out, "--quiet", "--workers", "2")
    assert_one_line_error(rc, err, "full.zarr.partial: no space left on the device while writing")
    assert not out.exists()


def test_debug_shows_the_traceback(rxrx_screen, tmp_path):
    from morphoscale.cli import main
    from morphoscale.errors import ValidationError

    (rxrx_screen / "metadata.csv").write_text("experiment,plate,well,site\n")
    with pytest.raises(ValidationError):
        main(["--debug", *map(str, _ingest_rxrx(rxrx_screen)), "--out", str(tmp_path / "x.zarr")])


@pytest.mark.parametrize("threads", [False, True], ids=["one thread", "threads"])
def test_header_checks_report_the_same_in_one_thread_or_many(tmp_path, capsys, monkeypatch, threads):
    """Headers are read in threads only when the first batch was slow (a network
    filesystem); either way every file of every batch is checked and named."""
    from morphoscale.data.readers import base

    monkeypatch.setattr(base, "SLOW_HEADER_SECONDS", 0.0 if threads else 1e9)
    rows = rxrx_rows()  # 16 sites x 6 channels: a first batch of 64 files and a second of 32
    src = _rxrx(tmp_path, rows=rows)
    rxrx_path(src, rows[1], 3).unlink()  # in the first batch
    rxrx_path(src, rows[14], 5).unlink()  # in the second
    out = tmp_path / "out" / "store.zarr"
    rc, _, err = run_cli(capsys, *_ingest_rxrx(src), "--out", out, "--quiet")
    assert_one_line_error(rc, err, "B02_s2_w3.png", "C03_s1_w5.png", "2 problems")
    assert nothing_written(out)


@pytest.mark.parametrize("where", ["the source itself", "inside the source", "holding the source"])
def test_ingest_never_writes_over_its_source(rxrx_screen, tmp_path, capsys, where):
    """An output that is, lies inside or holds the source is refused, --overwrite or not: the
    source is left as it was and nothing is written."""
    from cli_helpers import tree_state

    out = {"the source itself": rxrx_screen, "inside the source": rxrx_screen / "store.zarr"}.get(
        where, rxrx_screen.parent
    )
    before = tree_state(rxrx_screen)
    rc, _, err = run_cli(capsys, *_ingest_rxrx(rxrx_screen), "--out", out, "--overwrite", "--quiet")
    assert_one_line_error(rc, err, "is, holds or lies inside the input", "choose another output")
    assert tree_state(rxrx_screen) == before
    assert not (rxrx_screen / "store.zarr").exists() and not Path(str(out) + ".partial").exists()


def test_ingest_never_writes_over_the_folder_of_its_images(csv_screen, tmp_path, capsys):
    """A csv source whose images live in another folder: an output that is that folder is refused."""
    import pandas as pd
    from cli_helpers import tree_state

    images = csv_screen.parent
    table = pd.read_csv(csv_screen)
    for ch in ("dna", "actin", "mito"):
        table[ch] = [str(images / f) for f in table[ch]]
    meta = tmp_path / "meta"
    meta.mkdir()
    table.to_csv(meta / "sites.csv", index=False)
    (meta / "ingest.yaml").write_text((images / "ingest.yaml").read_text())
    before = tree_state(images)
    rc, _, err = run_cli(capsys, "ingest", "--config", meta / "ingest.yaml", "--out", images, "--overwrite", "--quiet")
    assert_one_line_error(rc, err, "is, holds or lies inside the input", str(images))
    assert tree_state(images) == before
