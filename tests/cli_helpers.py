from __future__ import annotations

from pathlib import Path

from morphoscale.cli import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *needles: str, code: int = 2) -> None:
    assert rc == code, f"exit {rc}, stderr: {err}"
    line = err.strip()
    assert line.startswith("error:"), err
    assert "\n" not in line, f"not one line: {err!r}"
    assert "Traceback" not in err
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"


def nothing_written(out: Path) -> bool:
    out = Path(out)
    leftovers = (
        [p for p in out.parent.iterdir() if p.name.startswith(out.name) or p.name.startswith("." + out.name)]
        if out.parent.exists()
        else []
    )
    return not leftovers


def tree_state(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under root with its size and content hash: a verb must leave its input so."""
    import hashlib

    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files}
