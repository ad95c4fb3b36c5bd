"""Real screens as they come (#23): cpg0016 JUMP (load_data as parquet/csv.gz, illumination
functions, s3 paths mapped to a local copy, the datasets repo's metadata tables), RxRx3-core's
schema and jp2 keys, RxRx1 with siRNA -> gene names. Pixels are the real JUMP field's."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import tifffile
from cli_helpers import assert_one_line_error, run_cli
from fixtures import rxrx_rows, write_rxrx_screen
from PIL import Image

from morphoscale.data.examples import JUMP_FIELD_FILES
from morphoscale.data.store import ImageStore

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]
S3 = "s3://cellpainting-gallery/cpg0016-jump/source_4/images/2021_04_26_Batch1/images/BR00121331__2021-05-03T16_12_04-Measurement1/Images"
WELLS = {  # well -> JCP2022 id, as cpg0016's well.csv.gz lays out a plate
    "A01": "JCP2022_033924",  # DMSO, negcon
    "A02": "JCP2022_012818",  # a compound (a poscon: TC-S-7004)
    "A03": "JCP2022_100001",  # a compound, treatment
    "B01": "JCP2022_800100",  # CRISPR of PSMA1
    "B02": "JCP2022_900100",  # ORF of PSMB1
    "B03": "JCP2022_999999",  # an empty well
}


def _gz(path, text: str) -> None:
    with gzip.open(path, "wt") as f:
        f.write(text)


def write_cpg0016_metadata(folder):
    """The jump-cellpainting/datasets metadata/ tables, cut to one plate."""
    folder.mkdir(parents=True, exist_ok=True)
    _gz(
        folder / "plate.csv.gz",
        "Metadata_Source,Metadata_Batch,Metadata_Plate,Metadata_PlateType\nsource_4,2021_04_26_Batch1,BR00121331,COMPOUND\nsource_4,2021_04_26_Batch1,OTHER,COMPOUND\n",
    )
    _gz(
        folder / "well.csv.gz",
        "Metadata_Source,Metadata_Plate,Metadata_Well,Metadata_JCP2022\n"
        + "".join(f"source_4,BR00121331,{w},{j}\n" for w, j in WELLS.items())
        + "source_4,OTHER,A01,JCP2022_033924\n",
    )
    _gz(
        folder / "compound.csv.gz",
        "Metadata_JCP2022,Metadata_InChIKey,Metadata_InChI,Metadata_SMILES\n"
        "JCP2022_033924,IAZDPXIOMUYVGZ-UHFFFAOYSA-N,InChI=1S/C2H6OS,CS(C)=O\nJCP2022_012818,KEY-A,x,y\nJCP2022_100001,KEY-B,x,y\nJCP2022_999999,,,\n",
    )
    _gz(folder / "crispr.csv.gz", "Metadata_JCP2022,Metadata_NCBI_Gene_ID,Metadata_Symbol\nJCP2022_800100,5682,PSMA1\n")
    _gz(
        folder / "orf.csv.gz",
        "Metadata_JCP2022,Metadata_broad_sample,Metadata_Symbol\nJCP2022_900100,ccsbBroad304_00001,PSMB1\n",
    )
    (folder / "perturbation_control.csv").write_text(
        "Metadata_JCP2022,Metadata_pert_type,Metadata_Name,Metadata_modality\nJCP2022_999999,empty,Empty,any\n"
        "JCP2022_033924,negcon,DMSO,compound\nJCP2022_012818,poscon,TC-S-7004,compound\n"
    )
    return folder


def illumination(shape, k: int) -> np.ndarray:
    """A smooth function >= 1, as CellProfiler's robust-minimum-rescaled functions are."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    return (1.0 + 0.5 * k * ((x - 0.5) ** 2 + (y - 0.3) ** 2)).astype(np.float32)


def write_cpg0016_load_data(root, field, kind="parquet", wells=tuple(WELLS)):
    """load_data_with_illum as the Gallery ships it: s3 PathNames, Illum columns, one row per site."""
    (root / "illum").mkdir(parents=True, exist_ok=True)
    shape = tifffile.imread(field / JUMP_FIELD_FILES["DNA"]).shape
    rows = []
    for w in wells:
        row = {"Metadata_Source": "source_4", "Metadata_Plate": "BR00121331", "Metadata_Well": w, "Metadata_Site": 1}
        for k, ch in enumerate(CHANNELS):
            row[f"FileName_Orig{ch}"] = JUMP_FIELD_FILES[ch]
            row[f"PathName_Orig{ch}"] = S3
            row[f"FileName_Illum{ch}"] = f"BR00121331_Illum{ch}.npy"
            row[f"PathName_Illum{ch}"] = (
                "s3://cellpainting-gallery/cpg0016-jump/source_4/images/2021_04_26_Batch1/illum/BR00121331"
            )
            np.save(root / "illum" / f"BR00121331_Illum{ch}.npy", illumination(shape, k + 1))
        rows.append(row)
    df = pd.DataFrame(rows)
    if kind == "parquet":
        path = root / "load_data_with_illum.parquet"
        df.to_parquet(path, index=False)
    else:
        path = root / "load_data_with_illum.csv.gz"
        df.to_csv(path, index=False, compression="gzip")
    return path


def maps(field, root):
    return [
        "--path-map",
        f"{S3}={field}",
        "--path-map",
        f"s3://cellpainting-gallery/cpg0016-jump/source_4/images/2021_04_26_Batch1/illum/BR00121331={root / 'illum'}",
    ]


@pytest.mark.parametrize("kind", ["parquet", "csv.gz"])
def test_cpg0016_as_the_gallery_ships_it(examples_dir, tmp_path, capsys, kind):
    field = examples_dir / "jump-pilot-field"
    load_data = write_cpg0016_load_data(tmp_path, field, kind)
    meta = write_cpg0016_metadata(tmp_path / "metadata")
    rc, out, err = run_cli(
        capsys,
        "ingest",
        "--format",
        "jump",
        "--source",
        load_data,
        "--jump-metadata",
        meta,
        *maps(field, tmp_path),
        "--dtype",
        "uint16",
        "--out",
        tmp_path / "s.zarr",
        "--quiet",
        "--workers",
        "1",
    )
    assert rc == 0, err
    assert "1 of 6 sites are empty wells" in err and "left out of the store" in err
    store = ImageStore(tmp_path / "s.zarr")
    sites = store.sites.set_index("well")
    assert list(sites.index) == ["A01", "A02", "A03", "B01", "B02"]
    assert sites["perturbation"].to_dict() == {
        "A01": "DMSO",
        "A02": "JCP2022_012818",
        "A03": "JCP2022_100001",
        "B01": "PSMA1",
        "B02": "PSMB1",
    }
    assert sites["perturbation_type"].to_dict() == {
        "A01": "control",
        "A02": "compound",
        "A03": "compound",
        "B01": "gene",
        "B02": "gene",
    }
    assert sites["is_control"].to_dict() == {"A01": True, "A02": False, "A03": False, "B01": False, "B02": False}
    assert sites["control_type"].to_dict() == {
        "A01": "negcon",
        "A02": "poscon",
        "A03": "trt",
        "B01": "trt",
        "B02": "trt",
    }
    assert sites["Metadata_modality"].to_dict() == {
        "A01": "compound",
        "A02": "compound",
        "A03": "compound",
        "B01": "crispr",
        "B02": "orf",
    }
    assert sites.loc["A03", "Metadata_InChIKey"] == "KEY-B" and sites.loc["B01", "Metadata_JCP2022"] == "JCP2022_800100"
    assert set(sites["batch"]) == {"2021_04_26_Batch1"}
    # every source path absolute and local, the illumination functions kept beside them
    assert all(str(p).startswith(str(field)) for p in sites["source_DNA"])
    assert sites.loc["A01", "illum_Mito"] == str(tmp_path / "illum" / "BR00121331_IllumMito.npy")
    attrs = store.attrs if hasattr(store, "attrs") else None
    import zarr

    attrs = dict(zarr.open_group(tmp_path / "s.zarr", mode="r").attrs)
    assert attrs["illumination"]["applied"] is True and attrs["illumination"]["channels"] == sorted(CHANNELS)
    # each plane is the raw image divided by its function, rounded (computed here independently)
    site = store.read(0)
    for c, ch in enumerate(store.channels):
        raw = tifffile.imread(field / JUMP_FIELD_FILES[ch]).astype(np.float64)
        f = np.load(tmp_path / "illum" / f"BR00121331_Illum{ch}.npy").astype(np.float64)
        expect = np.clip(np.rint(raw / f), 0, 65535).astype(np.uint16)
        np.testing.assert_array_equal(site[c], expect)


def test_no_illum_keeps_raw_pixels_and_says_so(examples_dir, tmp_path, capsys):
    field = examples_dir / "jump-pilot-field"
    load_data = write_cpg0016_load_data(tmp_path, field, wells=("A01", "A03"))
    meta = write_cpg0016_metadata(tmp_path / "metadata")
    rc, _, err = run_cli(
        capsys,
        "ingest",
        "--format",
        "jump",
        "--source",
        load_data,
        "--jump-metadata",
        meta,
        *maps(field, tmp_path),
        "--no-illum",
        "--dtype",
        "uint16",
        "--out",
        tmp_path / "s.zarr",
        "--quiet",
        "--workers",
        "1",
    )
    assert rc == 0, err
    import zarr

    attrs = dict(zarr.open_group(tmp_path / "s.zarr", mode="r").attrs)
    assert attrs["illumination"]["applied"] is False and "--no-illum" in attrs["illumination"]["why"]
    store = ImageStore(tmp_path / "s.zarr")
    for c, ch in enumerate(store.channels):
        np.testing.assert_array_equal(store.read(1)[c], tifffile.imread(field / JUMP_FIELD_FILES[ch]))


def test_jcp2022_names_every_well_by_its_id(examples_dir, tmp_path, capsys):
    field = examples_dir / "jump-pilot-field"
    load_data = write_cpg0016_load_data(tmp_path, field, wells=("A01", "B01", "B02"))
    meta = write_cpg0016_metadata(tmp_path / "metadata")
    rc, _, err = run_cli(
        capsys,
        "ingest",
        "--format",
        "jump",
        "--source",
        load_data,
        "--jump-metadata",
        meta,
        *maps(field, tmp_path),
        "--jump-perturbation",
        "jcp2022",
        "--out",
        tmp_path / "s.zarr",
        "--quiet",
        "--workers",
        "1",
    )
    assert rc == 0, err
    sites = ImageStore(tmp_path / "s.zarr").sites.set_index("well")
    assert sites.loc["B01", "perturbation"] == "JCP2022_800100" and sites.loc["B01", "Metadata_Symbol"] == "PSMA1"


def test_cpg0016_problems_name_their_file(examples_dir, tmp_path, capsys):
    field = examples_dir / "jump-pilot-field"
    load_data = write_cpg0016_load_data(tmp_path, field, wells=("A01", "C09"))
    meta = write_cpg0016_metadata(tmp_path / "metadata")
    args = [
        "ingest",
        "--format",
        "jump",
        "--source",
        load_data,
        "--jump-metadata",
        meta,
        *maps(field, tmp_path),
        "--out",
        tmp_path / "s.zarr",
        "--quiet",
    ]
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and "plate BR00121331 well C09 is not in" in err and "well.csv.gz" in err
    assert not (tmp_path / "s.zarr").exists()
    # a CRISPR and an ORF of one gene would be averaged into one profile: refused
    _gz(
        meta / "orf.csv.gz",
        "Metadata_JCP2022,Metadata_broad_sample,Metadata_Symbol\nJCP2022_900100,ccsbBroad304_00001,PSMA1\n",
    )
    load_data = write_cpg0016_load_data(tmp_path, field, wells=("A01", "B01", "B02"))
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and "gene PSMA1 is both a CRISPR and an ORF perturbation" in err
    # an illumination function of another shape names its file
    np.save(tmp_path / "illum" / "BR00121331_IllumER.npy", np.ones((10, 10), np.float32))
    write_cpg0016_metadata(meta)
    rc, _, err = run_cli(capsys, *args)
    assert_one_line_error(rc, err, "BR00121331_IllumER.npy", "the illumination function is 10x10")


def test_platemap_columns_from_the_command_line_and_errors_name_the_platemap(examples_dir, tmp_path, capsys):
    field = examples_dir / "jump-pilot-field"
    (tmp_path / "pm.tsv").write_text("Well\tpert\tpert_type\nA01\tDMSO\tnegcon\n")
    load = field / "load_data.csv"
    base = [
        "ingest",
        "--format",
        "jump",
        "--source",
        load,
        "--platemap",
        tmp_path / "pm.tsv",
        "--platemap-well-column",
        "Well",
        "--column",
        "perturbation=pert",
        "--column",
        "perturbation_type=pert_type",
        "--quiet",
    ]
    rc, _, err = run_cli(capsys, *base, "--out", tmp_path / "a.zarr")
    assert rc == 0, err  # negcon is a control type, and DMSO the default control
    sites = ImageStore(tmp_path / "a.zarr").sites
    assert sites.loc[0, "perturbation_type"] == "control" and bool(sites.loc[0, "is_control"])
    (tmp_path / "pm.tsv").write_text("Well\tpert\tpert_type\nA01\tcpd1\tnegcon\n")
    rc, _, err = run_cli(capsys, *base, "--no-controls-ok", "--out", tmp_path / "b.zarr")
    assert rc == 2 and "pm.tsv line 2 column 'pert_type'" in err and "not a control well" in err


def write_rxrx3_core(root, size=32, seed=0):
    """metadata_rxrx3_core.csv and its images as the HuggingFace keys, unpacked to .jp2."""
    rng = np.random.default_rng(seed)
    rows = []
    for e, ptype in (("gene-001", "CRISPR"), ("compound-001", "COMPOUND")):
        for k, (well, gene, treatment, conc) in enumerate(
            [
                ("AB02", "EMPTY_control", "EMPTY_control", ""),
                ("AB03", "PLK1", "PLK1_guide_1", ""),
                ("AC02", "MTOR", "MTOR_guide_2", ""),
            ]
            if ptype == "CRISPR"
            else [
                ("AB02", "", "EMPTY_control", ""),
                ("AB03", "", "Tofacitinib", "0.25"),
                ("AC02", "", "Tofacitinib", "2.5"),
            ]
        ):
            rows.append(
                dict(
                    well_id=f"{e}_1_{well}",
                    experiment_name=e,
                    plate="1",
                    address=well,
                    gene=gene,
                    treatment=treatment,
                    SMILES="C" if ptype == "COMPOUND" and gene == "" and treatment != "EMPTY_control" else "",
                    concentration=conc,
                    perturbation_type=ptype,
                    cell_type="HUVEC",
                )
            )
            folder = root / "images" / e / "Plate1"
            folder.mkdir(parents=True, exist_ok=True)
            for c in range(1, 7):
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(
                    folder / f"{well}_s1_{c}.jp2", irreversible=False
                )
    pd.DataFrame(rows).to_csv(root / "metadata_rxrx3_core.csv", index=False)
    return root


def test_rxrx3_core_schema_natively(tmp_path, capsys):
    root = write_rxrx3_core(tmp_path / "core")
    rc, _, err = run_cli(
        capsys,
        "ingest",
        "--format",
        "rxrx",
        "--source",
        root,
        "--dtype",
        "uint16",
        "--out",
        tmp_path / "c.zarr",
        "--quiet",
        "--workers",
        "1",
    )
    assert rc == 0, err
    store = ImageStore(tmp_path / "c.zarr")
    s = store.sites
    assert list(s["perturbation"]) == ["EMPTY_control", "PLK1", "MTOR", "EMPTY_control", "Tofacitinib", "Tofacitinib"]
    assert list(s["perturbation_type"]) == ["control", "gene", "gene", "control", "compound", "compound"]
    assert set(s["site"]) == {1} and list(s["batch"]) == ["gene-001"] * 3 + ["compound-001"] * 3
    assert list(s["treatment"])[1] == "PLK1_guide_1" and list(s["concentration"])[4] == "0.25"
    # the jp2 pixels (lossless) are what was written
    img = np.asarray(Image.open(root / "images" / "gene-001" / "Plate1" / "AB03_s1_4.jp2"))
    np.testing.assert_array_equal(store.read(1)[3], img)


def test_rxrx1_sirna_to_gene_and_positive_controls(tmp_path, capsys):
    rows = rxrx_rows(experiments=("HUVEC-1",), wells=("B02", "B03", "C02", "C03"), sites=(1,))
    rows[3]["well_type"], rows[3]["sirna"] = "positive_control", "s9999"
    root = write_rxrx_screen(tmp_path / "rx", rows=rows)
    (tmp_path / "names.csv").write_text("sirna,gene\ns1001,PSMA1\ns1002,PSMB1\n")
    rc, _, err = run_cli(
        capsys,
        "ingest",
        "--format",
        "rxrx",
        "--source",
        root,
        "--perturbation-names",
        tmp_path / "names.csv",
        "--out",
        tmp_path / "r.zarr",
        "--quiet",
        "--workers",
        "1",
    )
    assert rc == 0, err
    assert "1 of 4 rows have an id the table lacks (e.g. s9999)" in err
    s = ImageStore(tmp_path / "r.zarr").sites
    assert list(s["perturbation"]) == ["EMPTY", "PSMA1", "PSMB1", "s9999"]
    assert list(s["control_type"]) == ["negcon", "trt", "trt", "poscon"]
    assert list(s["sirna"]) == ["EMPTY", "s1001", "s1002", "s9999"] and set(s["dataset"]) == {"train"}
