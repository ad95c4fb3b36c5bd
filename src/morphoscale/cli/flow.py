"""Verbs of the whole flow: run a config, compare a grid of setups, write a run's report.

A verb is its options: one typer option per parameter, which the formatter writes over three
or four lines each, and a short body; that is why some verbs run past 60 lines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, err_console, out_console, print_table

# the options `run` and `compare` share: both drive the cached flow of flow/pipeline.py
RunFolder = Annotated[Optional[Path], typer.Option("--out", help="The run folder (default: runs/<name>).")]


FromStage = Annotated[
    Optional[str], typer.Option("--from", help="Re-run from this stage on: data, train, embed, map, bench or report.")
]


QuietStages = Annotated[bool, typer.Option("--quiet", help="No progress bars inside the stages.")]


@app.command(name="run")
def run_(
    config: Annotated[Path, typer.Argument(help="The experiment config (YAML): data, encoders, map, bench.")],
    out: RunFolder = None,
    start: FromStage = None,
    quiet: QuietStages = False,
    check_reproducible: Annotated[
        Optional[list[str]],
        typer.Option(
            "--check-reproducible",
            help="After the run, re-run this stage (an id such as train:wsl, or a kind such as embed; repeatable) and "
            "compare its outputs with the run's own; exit 1 when they differ.",
        ),
    ] = None,
):
    """Run the whole flow from one config; unchanged stages are taken from the cache."""
    from ..flow.config import load_run_config
    from ..flow.pipeline import Flow

    cfg = load_run_config(config)
    flow = Flow(cfg, out or Path("runs") / cfg.name)
    if check_reproducible:
        from ..flow.reproduce import stages_to_check

        stages_to_check(flow, check_reproducible)  # a wrong stage name fails before the run
    flow.run(start, progress=not quiet, console=err_console)
    if check_reproducible:
        print_reproducible(flow, check_reproducible)
        return
    if cfg.probe is not None:
        print_probe(flow.out / "probe" / "r2.csv")
    else:
        print_recall(flow.out / "recall.csv")
        print_paired(flow.out / "paired.csv")
        print_ladder(flow.out / "ladder.csv")
    out_console.print(f"wrote {flow.out / 'report.html'}")


def print_reproducible(flow, names: list[str]) -> None:
    """Re-run the named stages, print what matched, exit 1 on any difference."""
    from ..flow.reproduce import check_reproducible
    from ..report.console import reproducible_table

    t = check_reproducible(flow, names, console=err_console)
    out_console.print(reproducible_table(t))
    out_console.print(f"wrote {flow.out / 'reproducible.csv'}")
    if not t["equal"].all():
        err_console.print(
            f"error: {int((~t['equal']).sum())} of {len(t)} outputs differ when their stage runs again (reproduce/ holds the re-run)",
            markup=False,
        )
        raise typer.Exit(1)


def print_recall(path: Path) -> None:
    """The recall table of a run (recall.csv, the same numbers the report shows), with 95% intervals."""
    from ..report.console import recall_table

    table = recall_table(path)
    if table is None:
        out_console.print("no relationship recall (no genes with annotated pairs in the maps)")
    else:
        print_table(table)


def print_paired(path: Path) -> None:
    """Each encoder minus its baseline (paired.csv): the difference and its 95% interval."""
    from ..report.console import paired_table

    table = paired_table(path)
    if table is not None:
        print_table(table)


def print_ladder(path: Path) -> None:
    """ladder.csv: which rung each learned encoder reaches, then the table."""
    from ..report.console import ladder_table

    shown = ladder_table(path)
    if shown is not None:
        print_table(shown[1])
        for line in shown[0]:
            out_console.print(line, markup=False)


def print_probe(path: Path) -> None:
    """The nucleus-probe table of a real-data run (probe/r2.csv, as in the report)."""
    from ..report.console import probe_table

    print_table(probe_table(path))


@app.command()
def compare(
    config: Annotated[Path, typer.Argument(help="The grid config (YAML): data, models, augment, crop, seeds, budget.")],
    out: RunFolder = None,
    start: FromStage = None,
    quiet: QuietStages = False,
):
    """Train and score a grid of setups under one budget (equal images seen by default), with time, memory and FLOPs."""
    from ..compare.grid import compare as run_compare
    from ..compare.grid import load_compare_config
    from ..report.console import grid_table

    cfg = load_compare_config(config)
    folder = out or Path("runs") / cfg.name
    results = run_compare(cfg, folder, start, progress=not quiet, console=err_console)
    print_table(grid_table(results))
    out_console.print(f"wrote {folder / 'compare' / 'results.csv'} and {folder / 'report.html'}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `morphoscale run`.")],
):
    """Write a self-contained report.html of a run folder (figures embedded, no network needed)."""
    from ..report.html import write_report

    out_console.print(f"wrote {write_report(run_dir)}")
