"""The config reference (docs/config-reference.md), generated from the config types so that
it cannot drift from what the code accepts: `python -m morphoscale.flow.reference > docs/config-reference.md`.
A field's note is the comment on its line in the class (or the line above it)."""

from __future__ import annotations

import inspect
import re
import typing

from pydantic import BaseModel


def _type_name(t) -> str:
    s = re.sub(r"<class '([\w.]+)'>", r"\1", str(t)).replace("typing.", "")
    return re.sub(r"\b(?:[a-z_]+\.)+([A-Z]\w*)", r"\1", s)  # drop module paths


def _default(field) -> str:
    if field.is_required():
        return "required"
    d = field.get_default(call_default_factory=True)
    if isinstance(d, BaseModel):
        return "(the table below)"
    return f"`{d!r}`"


def _notes(model: type[BaseModel]) -> dict[str, str]:
    notes, above = {}, ""
    for line in inspect.getsource(model).splitlines():
        m = re.match(r"\s+(\w+)\s*:[^#]*(?:#\s*(.*))?$", line)
        c = re.match(r"\s+#\s*(.*)$", line)
        if c:
            above = (above + " " + c.group(1)).strip()
        elif m:
            notes[m.group(1)] = (m.group(2) or above).replace("|", "\\|")
            above = ""
        else:
            above = ""
    return notes


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def model_section(model: type[BaseModel], heading: str, prefix: str, level: int = 2) -> str:
    doc = model.__dict__.get("__doc__") or ""
    notes = _notes(model)
    lines = [
        f"{'#' * level} {heading}",
        "",
        inspect.cleandoc(doc),
        "",
        "| key | type | default | note |",
        "|---|---|---|---|",
    ]
    nested = []
    for name, f in model.model_fields.items():
        lines.append(
            f"| `{prefix}{name}` | `{_type_name(f.annotation).replace('|', '&#124;')}` | {_default(f)} | {notes.get(name, '')} |"
        )
        is_list = typing.get_origin(f.annotation) is list
        nested += [(m, f"{prefix}{name}{'[]' if is_list else ''}") for m in _models_in(f.annotation)]
    text = "\n".join(lines) + "\n"
    for m, key in nested:
        text += "\n" + model_section(m, f"`{key}`", f"{key}.", level + 1)
    return text


def reference() -> str:
    from ..data.ingest import IngestConfig
    from ..train.fit import TrainConfig
    from .config import RunConfig

    out = [
        "# Config reference",
        "",
        "Generated from the config types by `python -m morphoscale.flow.reference > docs/config-reference.md`;",
        "a test keeps this page current. Unknown keys are errors that name the key.",
        "",
    ]
    out.append(model_section(RunConfig, "Run config (`morphoscale run CONFIG.yaml`)", ""))
    out.append(
        model_section(TrainConfig, "Train config (`morphoscale train --config`, or `encoders[].train` of a run)", "")
    )
    out.append(
        model_section(IngestConfig, "Ingest config (`morphoscale ingest --config`, or `data.ingest` of a run)", "")
    )
    return "\n".join(out)


if __name__ == "__main__":
    print(reference(), end="")
