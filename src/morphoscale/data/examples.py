"""Real example data that public packages ship, fetched with `pip download --no-deps` (never installed).

- jump-pilot-field: one 5-channel Cell Painting field of the JUMP pilot (cpg0000, plate
  BR00116991, well A01, site 1; 1080x1080 uint16 TIFFs) and its CellProfiler Nuclei.csv,
  from the deepprofiler 0.5.1 source archive. We add a load_data.csv and a platemap so the
  jump reader ingests it.
- example-fly: CellProfiler's ExampleFly (Drosophila Kc167 cells, 3 fields x 3 channels),
  from the cellprofiler 4.2.8.1 wheel. We add a site CSV and an ingest config for the csv reader.
- annotations: CORUM, hu.MAP, Reactome, SIGNOR, StringDB pairs and CORUM complexes, from the
  efaar-benchmarking 1.0 wheel.
- efaar-reference: the efaar_benchmarking 1.0 package itself (the seed paper's evaluation
  code), unpacked, never installed: `morphoscale.bench.reference` imports it so that tests
  and benchmarks run its functions beside ours on the same data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io import write_text


@dataclass(frozen=True)
class Example:
    package: str  # pip requirement
    archive: str  # "sdist" or "wheel"
    member: str  # folder inside the archive
    description: str
    expected: tuple[str, ...]  # files that must be there once prepared


JUMP_FIELD_FILES = {
    # channel -> file (Phenix channel numbers), as JUMP's channel_mapping.csv gives them for
    # the Broad Phenix (sources 3, 4, 8: Mito 1, AGP 2, RNA 3, ER 4, DNA 5), and as the images
    # and the field's own CellProfiler Nuclei.csv say: per nucleus, ch1 ranks with CellProfiler's
    # Mito intensity (Spearman 0.68, AGP 0.47) and ch2 with its AGP (0.75, Mito 0.57); ch1 is
    # perinuclear and excluded from nuclei (MitoTracker), ch2 has the Golgi spots and cell
    # outlines (docs/datasets.md; benchmarks/jump_channels.py). Until 2026-12-06 AGP and Mito
    # were swapped here.
    "DNA": "r01c01f01p01-ch5sk1fk1fl1.tiff",
    "ER": "r01c01f01p01-ch4sk1fk1fl1.tiff",
    "RNA": "r01c01f01p01-ch3sk1fk1fl1.tiff",
    "AGP": "r01c01f01p01-ch2sk1fk1fl1.tiff",
    "Mito": "r01c01f01p01-ch1sk1fk1fl1.tiff",
}
# ExampleFly suffixes; the pipeline names D, F, R OrigBlue, OrigGreen, OrigRed:
# Hoechst (DNA), phospho-histone H3 and phalloidin (actin).
FLY_CHANNELS = {"DNA": "D", "PH3": "F", "Actin": "R"}
FLY_FIELDS = ["01_POS002", "01_POS076", "01_POS218"]
ANNOTATION_FILES = ("CORUM.txt", "HuMAP.txt", "Reactome.txt", "SIGNOR.txt", "StringDB.txt", "CORUM_clusters.tsv")

EXAMPLES = {
    "jump-pilot-field": Example(
        "deepprofiler==0.5.1",
        "sdist",
        "deepprofiler-0.5.1/tests/data/cpg0000/BR00116991/A01-1/",
        "JUMP pilot Cell Painting field (5 x 1080x1080 uint16) + CellProfiler Nuclei.csv",
        tuple(JUMP_FIELD_FILES.values()) + ("Nuclei.csv", "load_data.csv", "platemap.csv", "ingest.yaml"),
    ),
    "example-fly": Example(
        "cellprofiler==4.2.8.1",
        "wheel",
        "cellprofiler/data/examples/ExampleFly/images/",
        "CellProfiler ExampleFly: 3 fields x 3 channels (DNA, PH3, Actin)",
        tuple(f"{f}_{s}.TIF" for f in FLY_FIELDS for s in FLY_CHANNELS.values()) + ("sites.csv", "ingest.yaml"),
    ),
    "annotations": Example(
        "efaar-benchmarking==1.0",
        "wheel",
        "efaar_benchmarking/benchmark_annotations/",
        "known gene relationships: CORUM, hu.MAP, Reactome, SIGNOR, StringDB, CORUM complexes",
        ANNOTATION_FILES,
    ),
    "efaar-reference": Example(
        "efaar-benchmarking==1.0",
        "wheel",
        "",
        "efaar-benchmarking 1.0's own code (efaar.py, benchmarking.py), for side-by-side checks",
        tuple(f"efaar_benchmarking/{f}" for f in ("__init__.py", "efaar.py", "benchmarking.py", "constants.py")),
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("MORPHOSCALE_CACHE", Path.home() / ".cache" / "morphoscale")).expanduser()


def is_cached(name: str) -> bool:
    folder = cache_dir() / name
    return all((folder / f).exists() for f in EXAMPLES[name].expected)


def get(name: str, force: bool = False) -> Path:
    """The folder of example `name`, fetched into the cache when missing."""
    if name not in EXAMPLES:
        raise InputError(f"unknown dataset '{name}'; known: {', '.join(EXAMPLES)}")
    folder = cache_dir() / name
    if is_cached(name) and not force:
        if name in DERIVED:
            PREPARE[name](folder)  # the files we write beside the archive's stay current
        return folder
    ex = EXAMPLES[name]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        archive = _download(ex, tmp / "dl")
        staging = tmp / name
        _extract(archive, ex.member, staging)
        PREPARE[name](staging)
        missing = [f for f in ex.expected if not (staging / f).exists()]
        if missing:
            raise InputError(f"{archive.name}: expected files missing after extraction: {', '.join(missing)}")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    return folder


def _download(ex: Example, dest: Path) -> Path:
    dest.mkdir(parents=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        ex.package,
    ]
    if ex.archive == "sdist":
        cmd[4:4] = ["--no-binary", ex.package.split("==")[0]]
    else:
        cmd[4:4] = ["--only-binary", ":all:"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    files = list(dest.iterdir())
    if res.returncode != 0 or not files:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"pip download {ex.package} failed (a package registry must be reachable): {last}")
    return files[0]


def _extract(archive: Path, member: str, dest: Path) -> None:
    dest.mkdir(parents=True)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if info.filename.startswith(member) and not info.is_dir():
                    target = dest / info.filename[len(member) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
    else:
        with tarfile.open(archive) as t:
            for info in t.getmembers():
                if info.name.startswith(member) and info.isfile():
                    target = dest / info.name[len(member) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with t.extractfile(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)


def _write_text(path: Path, text: str) -> None:
    """Write only when the content changes (a cached example is refreshed on every `get`)."""
    if not path.exists() or path.read_text() != text:
        write_text(path, text)


def _prepare_jump(folder: Path) -> None:
    header = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    row = ["BR00116991", "A01", "1"]
    for ch, f in JUMP_FIELD_FILES.items():
        header += [f"FileName_Orig{ch}", f"PathName_Orig{ch}"]
        row += [f, "."]
    _write_text(folder / "load_data.csv", ",".join(header) + "\n" + ",".join(row) + "\n")
    # The compound in A01 of the JUMP-Target-1 compound plate is not named in the archive:
    # the platemap says only which plate-map slot it is.
    _write_text(
        folder / "platemap.csv",
        "well_position,broad_sample,perturbation_type\nA01,JUMP-Target-1_compound_A01,compound\n",
    )
    _write_text(
        folder / "ingest.yaml",
        "# The JUMP pilot field through the jump reader; one treated field, so no control wells.\n"
        "format: jump\nsource: load_data.csv\nplatemap: platemap.csv\nrequire_controls: false\n",
    )


def _prepare_fly(folder: Path) -> None:
    lines = ["plate,well,site,field,batch,perturbation," + ",".join(FLY_CHANNELS)]
    for k, field in enumerate(FLY_FIELDS, start=1):
        paths = [f"{field}_{s}.TIF" for s in FLY_CHANNELS.values()]
        lines.append(f"ExampleFly,A01,{k},{field},ExampleFly,untreated," + ",".join(paths))
    _write_text(folder / "sites.csv", "\n".join(lines) + "\n")
    _write_text(
        folder / "ingest.yaml",
        "# The three untreated ExampleFly fields through the generic csv reader.\n"
        "format: csv\nsource: sites.csv\n"
        "channel_columns: {" + ", ".join(f"{c}: {c}" for c in FLY_CHANNELS) + "}\n"
        "columns: {control_values: [untreated]}\n",
    )


def _prepare_annotations(folder: Path) -> None:
    for f in list(folder.iterdir()):
        if f.name not in ANNOTATION_FILES and f.name != "LICENSE":
            f.unlink()


def _prepare_reference(folder: Path) -> None:
    # only the package: the wheel also ships a top-level `tests` package that would shadow ours on sys.path
    for f in list(folder.iterdir()):
        if f.name != "efaar_benchmarking":
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    shutil.rmtree(folder / "efaar_benchmarking" / "expression_data", ignore_errors=True)


DERIVED = ("jump-pilot-field", "example-fly")  # examples with files written by us, not the archive's
PREPARE = {
    "jump-pilot-field": _prepare_jump,
    "example-fly": _prepare_fly,
    "annotations": _prepare_annotations,
    "efaar-reference": _prepare_reference,
}
