"""The `morphoscale` app: its consoles, the help's value types, and `main`, which turns every
error a user can act on into one line and exit code 2 (`--debug` shows the traceback)."""

from __future__ import annotations

import sys
import warnings
from typing import Annotated

import typer
from rich.console import Console

from .. import __version__
from ..errors import MorphoscaleError

_CLICK_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "bool": "BOOLEAN",
    "path": "PATH",
    "file": "FILE",
    "directory": "DIRECTORY",
}


def _option_type(self, ctx) -> str | None:
    """An option's value in help as click writes it (TEXT, PATH, INTEGER; a repeatable option
    says so in its help); a flag takes no value, so none. Typer 0.29 writes Python annotations
    instead (<bool>, <list[str]>)."""
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    if self.metavar is not None:
        return self.metavar
    label = self.display_type(ctx).strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    return _CLICK_NAMES.get(label, label.upper() if label.isidentifier() else label)


for _param in (typer.core.TyperOption, typer.core.TyperArgument):
    _param.display_type_rich = _option_type


app = typer.Typer(
    name="morphoscale",
    help="Learn representations of cellular morphology from microscopy and turn them into maps of biology.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


datasets_app = typer.Typer(
    help="Real example data shipped inside public packages: list and fetch into the cache.", no_args_is_help=True
)


err_console = Console(stderr=True, soft_wrap=True)


out_console = Console(
    soft_wrap=True, markup=False
)  # paths and names are printed as they are (a "[x]" in one is not markup)


def _version(value: bool):
    if value:
        print(f"morphoscale {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
):
    """--debug is read by main() before the app runs; declared here so that help lists it."""


def assignments(items: list[str] | None, flag: str, form: str) -> dict[str, str]:
    """Repeated KEY=VALUE options as a dict; an item without '=' is a one-line error naming the flag."""
    from ..errors import ConfigError

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} '{item}': expected {form}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def print_table(table) -> None:
    """A table at the width it needs, never wrapped into unreadable cells (a narrow terminal folds the lines instead)."""
    from rich.measure import Measurement

    need = Measurement.get(out_console, out_console.options.update(max_width=10_000), table).maximum
    width = out_console.width
    out_console.width = max(width, need)
    try:
        out_console.print(table)
    finally:
        out_console.width = width


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """morphoscale's own warnings as one line each; everything else as Python prints it."""
    from ..errors import MorphoscaleWarning

    if issubclass(category, MorphoscaleWarning):
        err_console.print(f"[bold yellow]warning:[/] {rich_escape(str(message))}", markup=True, highlight=False)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def rich_escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


_terminated: list[bool] = []


def _on_sigterm(signum, frame) -> None:
    """`kill PID` (SIGTERM, what a scheduler sends at the time limit) ends a verb as Ctrl-C
    does: every open output's temporaries are removed on the way out, the resumable parts
    kept, one line, exit code 143 (else Python died at once, temporaries left behind)."""
    _terminated.append(True)
    raise KeyboardInterrupt


def _interrupted() -> int:
    if _terminated:
        err_console.print("terminated; re-run the same command to resume")
        return 143
    err_console.print("interrupted; re-run the same command to resume")
    return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user-facing errors into one line and an exit code."""
    import signal
    import threading

    warnings.showwarning = _show_warning
    _terminated.clear()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return _main_app(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main_app(argv: list[str] | None) -> int:
    from typer.exceptions import Abort, Exit, TyperException

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # Non-standalone typer returns the exit code of Exit (130 for Ctrl-C) instead of exiting.
        rv = app(args=args, prog_name="morphoscale", standalone_mode=False)
        if isinstance(rv, int) and rv != 0:
            return _interrupted() if rv == 130 else rv
    except MorphoscaleError as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {rich_escape(str(e))}", markup=True, highlight=False)
        return e.exit_code
    except Exit as e:
        return e.exit_code
    except Abort:
        if _terminated:
            return _interrupted()
        err_console.print("aborted")
        return 130
    except TyperException as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            print(e.format_message())
            return 0
        if debug:
            raise
        msg = " ".join(e.format_message().split())
        err_console.print(f"[bold red]error:[/] {rich_escape(msg)}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    return 0
