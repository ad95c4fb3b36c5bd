import subprocess
import sys

from cli_helpers import assert_one_line_error, run_cli

VERBS = ["simulate", "ingest", "train", "features", "embed", "map", "bench", "compare", "report", "run", "datasets"]


def test_help_lists_every_verb_of_the_flow():
    res = subprocess.run(
        [sys.executable, "-m", "morphoscale", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert res.returncode == 0
    listed = [line.split()[1] for line in res.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 1]
    for verb in VERBS:
        assert verb in listed, f"{verb} missing from --help"


def test_datasets_list_names_every_example(capsys, examples_dir):
    rc, out, _ = run_cli(capsys, "datasets", "list")
    assert rc == 0
    for name in ("jump-pilot-field", "example-fly", "annotations"):
        assert name in out


def test_unknown_dataset(capsys):
    rc, _, err = run_cli(capsys, "datasets", "get", "rxrx3")
    assert_one_line_error(rc, err, "unknown dataset 'rxrx3'")


def test_usage_error_is_one_line(capsys):
    rc, _, err = run_cli(capsys, "ingest", "--format", "rxrx")
    assert_one_line_error(rc, err, "--out")


def test_annotations_are_the_real_files(examples_dir):
    import pandas as pd

    ann = examples_dir / "annotations"
    for name in ("CORUM", "HuMAP", "Reactome", "SIGNOR", "StringDB"):
        df = pd.read_csv(ann / f"{name}.txt")
        assert list(df.columns) == ["entity1", "entity2"] and len(df) > 1000
    first = (ann / "CORUM_clusters.tsv").read_text().splitlines()[0].split("\t")
    assert first[0] == "(E.F.G) complex" and first[1].split() == ["SNRPE", "SNRPF", "SNRPG"]


def test_help_names_value_types_as_click_does(capsys):
    """Options show TEXT / PATH / INTEGER and flags show no value, not Python annotations."""
    rc, out, err = run_cli(capsys, "ingest", "--help")
    assert rc == 0, err
    assert "<bool>" not in out and "<str>" not in out and "list[str]" not in out
    assert "PATH" in out and "INTEGER" in out and "TEXT" in out
