"""The experiment config of `morphoscale run`: one YAML file for the whole flow.

Paths inside it are relative to the current folder (run from the repository root), except
`data.ingest`, which may name an ingest config whose own paths are relative to that file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import parse_model, read_yaml
from ..errors import ConfigError

STAGES = ("data", "train", "embed", "map", "bench", "report")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SimulateSpec(_Strict):
    preset: str = "demo"
    seed: int = 0


class DataSpec(_Strict):
    """Exactly one source: a simulated screen, an ingest (config file or inline keys), or a store."""

    simulate: SimulateSpec | None = None
    ingest: Path | dict | None = None
    store: Path | None = None

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("simulate", "ingest", "store") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of simulate, ingest, store (got {', '.join(given) or 'none'})")
        return self


class EmbedSpec(_Strict):
    level: Literal["site", "well"] = "well"
    pooling: str | None = None
    layer: int = -1
    tile_size: int | None = None
    batch_size: int = Field(64, ge=1)


class FeatureSpec(_Strict):
    nuclear_channel: str = "DNA"
    nucleus_diameter: float | None = None
    flatfield: Literal["none", "radial"] = "none"
    statistic: Literal["median", "mean"] = "median"
    texture_levels: int = 8


class EncoderSpec(_Strict):
    """One representation of the images: a trained (or random-init) model, the hand-crafted
    features, or the simulator's oracle (true morphology parameters, the ceiling)."""

    name: str
    kind: Literal["model", "features", "oracle"] = "model"
    train: Path | dict | None = None  # kind model: a train config file or inline keys
    embed: EmbedSpec = EmbedSpec()
    features: FeatureSpec = FeatureSpec()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '_', '-' and '.' only")
        return v

    @model_validator(mode="after")
    def _train_for_models(self):
        if self.kind == "model" and self.train is None:
            raise ValueError(f"encoder '{self.name}': kind model needs a train config")
        return self


class MapSpec(_Strict):
    align: Literal["none", "center_scale", "pca_center_scale", "tvn", "sphering", "harmony"] = "tvn"
    aggregate: Literal["mean", "median"] = "mean"


class BenchSpec(_Strict):
    compound_targets: Path | None = None  # default for a simulated screen: its ground truth
    clustering: bool = False
    null_size: int = Field(2000, ge=100)


class RunConfig(_Strict):
    name: str = "run"
    data: DataSpec
    encoders: list[EncoderSpec] = Field(min_length=1)
    map: MapSpec = MapSpec()
    bench: BenchSpec = BenchSpec()
    workers: int | None = None  # processes for simulate, ingest and features (default: one per core)

    @model_validator(mode="after")
    def _checks(self):
        names = [e.name for e in self.encoders]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"encoder names must be unique ({', '.join(dup)} repeated)")
        if any(e.kind == "oracle" for e in self.encoders) and self.data.simulate is None:
            raise ValueError("an oracle encoder needs a simulated screen (data.simulate)")
        return self


def load_run_config(path: Path) -> RunConfig:
    cfg = parse_model(RunConfig, read_yaml(path), str(path))
    for i, e in enumerate(cfg.encoders):
        if isinstance(e.train, Path) and not e.train.exists():
            raise ConfigError(f"{path}: key 'encoders.{i}.train': {e.train} not found")
    if isinstance(cfg.data.ingest, Path) and not cfg.data.ingest.exists():
        raise ConfigError(f"{path}: key 'data.ingest': {cfg.data.ingest} not found")
    return cfg
