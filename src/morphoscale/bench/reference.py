"""efaar-benchmarking 1.0, the seed paper's own evaluation code, run beside ours.

Its wheel is unpacked into the cache (`morphoscale datasets get efaar-reference`), never
installed: it pins heavy dependencies and ships a top-level `tests` package. Its modules
import scvi and geomloss at the top, for functions we never call (scVI embeddings, the
energy distance of the magnitude benchmark); they get stub modules that fail if used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _stub(name: str, **attrs) -> None:
    top = name.split(".")[0]
    if name in sys.modules or (top not in sys.modules and importlib.util.find_spec(top) is not None):
        return  # the real package, or a stub made before
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    if "." in name:
        setattr(sys.modules[top], name.split(".", 1)[1], mod)


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("this part of efaar-benchmarking needs a package morphoscale stubs out (scvi or geomloss)")


def load():
    """(efaar_benchmarking.efaar, efaar_benchmarking.benchmarking), imported from the cached wheel."""
    from ..data import examples

    folder = str(examples.get("efaar-reference"))
    _stub("scvi")
    _stub("scvi.model", SCVI=_Unavailable)
    _stub("geomloss", SamplesLoss=_Unavailable)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("efaar_benchmarking.efaar"), importlib.import_module(
        "efaar_benchmarking.benchmarking"
    )
