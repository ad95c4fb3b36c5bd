"""The `morphoscale` command: one verb per stage of the flow.

Errors a user can act on print one line and exit 2; `--debug` shows the traceback instead.
Each module holds the verbs of one stage; importing it registers them on the app, in the
order `--help` lists them.
"""

# isort: off
from . import data, maps, learn, flow  # noqa: F401  (registers the verbs, in the order --help lists them)

# isort: on
from .app import app, datasets_app, main

app.add_typer(datasets_app, name="datasets")

__all__ = ["app", "main"]
