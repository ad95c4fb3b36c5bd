"""One direction of flow: every import inside the package, at module level or inside a
function, points downstream in the layer order (DESIGN.md, "Layout"), and no module reaches
into another package's private names."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "morphoscale"

# Each layer imports only itself and the layers before it. The first is the package's
# root modules (errors, io, config, compute, ...): shared by every stage.
LAYERS = [
    "",
    "data",
    "simulate",
    "models",
    "train",
    "embed",
    "features",
    "maps",
    "bench",
    "report",
    "flow",
    "compare",
    "cli",
    "__main__",
]
ROOT_MODULES = {"__init__", "chunked", "compute", "config", "determinism", "errors", "io", "memory", "parallel"}


def layer_of(module: str) -> str:
    """'morphoscale.bench.suite' -> 'bench'; a root module -> ''."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    return "" if parts[1] in ROOT_MODULES else parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, text: str | None = None):
    """(line, imported module, names) for every import of the package in this file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "morphoscale":
                yield node.lineno, target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "morphoscale":
                    yield node.lineno, a.name, []


def sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    for path in sources():
        assert layer_of(module_name(path)) in LAYERS, f"{path}: in no layer of tests/test_layers.py"


def test_every_import_points_downstream():
    rank = {name: i for i, name in enumerate(LAYERS)}
    against = []
    for path in sources():
        here = layer_of(module_name(path))
        for line, target, names in imports(path):
            if rank[layer_of(target)] > rank[here]:
                against.append(f"{path.relative_to(PACKAGE)}:{line} imports {target} ({', '.join(names)})")
    assert not against, "imports against the layer order:\n" + "\n".join(against)


def test_no_private_name_crosses_a_package():
    crossing = []
    for path in sources():
        here = module_name(path)
        for line, target, names in imports(path):
            if layer_of(target) == layer_of(here):
                continue
            crossing += [
                f"{path.relative_to(PACKAGE)}:{line} imports {target}.{n}"
                for n in names
                if n.startswith("_") and n != "__version__"
            ]
    assert not crossing, "private names used across packages:\n" + "\n".join(crossing)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from ..bench.summary import fmt", "morphoscale.bench.summary"),
        ("from . import x", "morphoscale.report"),
        ("from .elements import y", "morphoscale.report.elements"),
        ("import morphoscale.io", "morphoscale.io"),
    ],
)
def test_relative_imports_resolve(source, expected):
    """The checker itself: an import in report/html.py, at any depth, resolves to the module it names."""
    text = "def f():\n    " + source + "\n"
    assert [t for _, t, _ in imports(PACKAGE / "report" / "html.py", text)] == [expected]


def test_an_upward_import_would_be_caught():
    here, target = layer_of("morphoscale.models.masked"), layer_of("morphoscale.train.fit")
    assert LAYERS.index(target) > LAYERS.index(here) and layer_of("morphoscale.io") == ""
