"""The experiment config of `morphoscale run`: one YAML file for the whole flow.

Paths inside it are relative to the current folder (run from the repository root), except
`data.ingest`, which may name an ingest config whose own paths are relative to that file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import parse_model, read_yaml
from ..data.split import Split
from ..errors import ConfigError
from ..maps import ALIGNER_SUMMARIES, DEFAULT_ALIGNER

STAGES = ("data", "train", "embed", "map", "bench", "report")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SimulateSpec(_Strict):
    """A simulated screen with known biology (`morphoscale simulate`), then ingested."""

    preset: str = "demo"  # tiny, demo or large
    seed: int = Field(0, ge=0, lt=2**32)  # same seed, bit-identical screen

    @field_validator("preset")
    @classmethod
    def _known(cls, v):
        from ..simulate.screen import PRESETS

        if v not in PRESETS:
            raise ValueError(f"unknown preset; choose one of {', '.join(PRESETS)}")
        return v


class DataSpec(_Strict):
    """Exactly one source: a simulated screen, an ingest (config file or inline keys), or a store."""

    simulate: SimulateSpec | None = None
    example: Literal["jump-pilot-field"] | None = None  # real example data (`morphoscale datasets get`), ingested
    ingest: Path | dict | None = None  # an ingest config file (paths relative to it) or its keys inline
    store: Path | None = None  # an existing image store (never modified by the run)

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("simulate", "example", "ingest", "store") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of simulate, example, ingest, store (got {', '.join(given) or 'none'})")
        return self


class EmbedSpec(_Strict):
    """How a model's embeddings are made (`morphoscale embed`)."""

    level: Literal["site", "well"] = "well"
    pooling: str | None = None  # default: the model's (MAE: mean of patch tokens)
    layer: int = -1  # the block whose output is the embedding
    tile_size: int | None = None  # default: the model's crop size
    batch_size: int = Field(64, ge=1)


class FeatureSpec(_Strict):
    """The hand-crafted features (`morphoscale features`), for `kind: features`."""

    nuclear_channel: str = "DNA"  # the channel nuclei are segmented on
    nucleus_diameter: float | None = None  # pixels; default: estimated per site
    flatfield: Literal["none", "radial"] = "none"  # radial: correct vignetting from the nuclei (microscope fields)
    statistic: Literal["median", "mean"] = "median"  # per-site reduction over cells
    texture_levels: int = 8  # grey levels of the Haralick co-occurrence matrices


class EncoderSpec(_Strict):
    """One representation of the images: a trained (or random-init) model, the hand-crafted
    features, or the simulator's oracle (true morphology parameters, the ceiling)."""

    name: str  # the folder under encoders/ and the name in tables
    kind: Literal["model", "features", "oracle", "pretrained"] = "model"  # oracle: the simulator's true parameters
    train: Path | dict | None = None  # kind model: a train config file or inline keys
    weights: Path | None = None  # kind pretrained: released weights on disk (OpenPhenom, timm ViT, ours; docs/embed.md)
    weights_layout: Literal["auto", "openphenom", "timm", "morphoscale"] = "auto"
    arch: str | None = None  # a timm checkpoint's architecture name
    mlp_bias: Literal["auto", "legacy", "fixed"] = "auto"  # ParallelScalingBlock's bias routing (docs/embed.md)
    input_norm: Literal["auto", "self", "instance", "mean_std"] = "auto"  # how the weights want their pixels
    mean: list[float] | None = None  # input_norm mean_std: per channel, pixels / full scale
    std: list[float] | None = None
    embed: EmbedSpec = EmbedSpec()
    features: FeatureSpec = FeatureSpec()
    # the fair floor: another encoder of the run (the same architecture and readout at random
    # init); every metric of this one is also reported as a paired difference against it
    baseline: str | None = None
    # kind model: one training per seed; the encoder becomes NAME-sK for each K (its train
    # config's seed set to K); a baseline with seeds too pairs seed by seed (docs/run.md)
    seeds: list[int] | None = Field(None, min_length=1)
    seed: int | None = Field(None, ge=0, lt=2**32)  # kind model: the training seed, over the train config's
    family: str | None = None  # set by `seeds`: the name the seeds share (pooled in paired.csv)

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
        if self.kind != "model" and (self.seeds is not None or self.seed is not None):
            raise ValueError(f"encoder '{self.name}': seeds belong to kind model (a training seed)")
        if (self.kind == "pretrained") != (self.weights is not None):
            raise ValueError(
                f"encoder '{self.name}': "
                + (
                    "kind pretrained needs weights (a file)"
                    if self.kind == "pretrained"
                    else "weights belong to kind pretrained"
                )
            )
        return self


class MapSpec(_Strict):
    """Alignment on control wells and aggregation to perturbations (`morphoscale map`)."""

    align: str = DEFAULT_ALIGNER  # one of maps.ALIGNER_SUMMARIES; tvn is efaar 1.0's exactly (docs/map.md)
    aggregate: Literal["mean", "median"] = "mean"

    @field_validator("align")
    @classmethod
    def _known_aligner(cls, v):
        if v not in ALIGNER_SUMMARIES:
            raise ValueError(f"unknown alignment '{v}'; choose one of {', '.join(ALIGNER_SUMMARIES)}")
        return v


class BenchSpec(_Strict):
    """The benchmark suite (`morphoscale bench`)."""

    compound_targets: Path | None = None  # CSV compound,target; default for a simulated screen: its ground truth
    truth: bool = True  # a simulated screen: decoding R2 and cosine correlation against its ground_truth/
    clustering: bool = False  # also UMAP + HDBSCAN cluster scores (slow)
    # draws of each mAP null (2,000 left the BH fraction swinging by seed: docs/bench.md)
    null_size: int = Field(10000, ge=100)
    metrics: list[str] | None = None  # only these (bench.suite.METRICS); default: all the map supports but clustering
    quick: bool = False  # recall and the cheapest checks only

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v):
        from ..bench.metrics import select_metrics
        from ..errors import ConfigError

        try:
            select_metrics(v)
        except ConfigError as e:
            raise ValueError(str(e).replace("--metrics: ", "")) from None
        return v


class ProbeSpec(_Strict):
    """Instead of maps and benchmarks (a real field has no perturbations): embeddings of crops
    centred on each nucleus predict its CellProfiler features, by cross-validated ridge R2."""

    nuclei: Path | None = None  # CellProfiler Nuclei.csv; default: the example field's
    crop_size: int = Field(64, ge=8)
    folds: int = Field(5, ge=2)


class LadderSpec(_Strict):
    """The rungs every learned encoder (one with a baseline) is placed against, beyond its
    twin: encoders of this run, named (bench/ladder.py; docs/run.md)."""

    untrained: str | None = None  # the strongest untrained encoder, chosen on another screen
    features: str | None = None  # the hand-crafted features
    oracle: str | None = None  # the simulator's true parameters: the fraction of its distance from random


class RunConfig(_Strict):
    """One experiment: where the images come from, the encoders to compare, and how maps are
    made and scored. Relative paths are relative to the folder `morphoscale run` is started in."""

    name: str = "run"  # the default run folder is runs/<name>
    data: DataSpec
    encoders: list[EncoderSpec] = Field(min_length=1)  # each goes through embed -> map -> bench
    # held out of every model's training; every encoder's map is made and scored on it alone
    split: Split = Split()
    map: MapSpec = MapSpec()
    bench: BenchSpec = BenchSpec()
    probe: ProbeSpec | None = None  # a real field: the nucleus-feature probe replaces embed, map and bench
    ladder: LadderSpec | None = (
        None  # each learned encoder against the strongest untrained one, the features, the oracle
    )
    workers: int | None = None  # processes for simulate, ingest and features (default: one per core)
    isolate_training: bool = False  # train each model in a process of its own, so its peak memory is its own
    # models trained at once, each in its own process (one GPU each where there are GPUs)
    parallel_training: int = Field(1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _one_encoder_per_seed(cls, data):
        """encoders[].seeds: [0, 1, 2] -> three encoders NAME-s0 ..., each its seed; a baseline
        that has seeds too is paired seed by seed (the same seeds needed), else shared."""
        if not isinstance(data, dict) or not isinstance(data.get("encoders"), list):
            return data
        raw = [e for e in data["encoders"] if isinstance(e, dict)]
        seeds_of = {e.get("name"): e["seeds"] for e in raw if isinstance(e.get("seeds"), list)}
        out = []
        for e in data["encoders"]:
            if not isinstance(e, dict) or e.get("name") not in seeds_of:
                out.append(e)
                continue
            base = e.get("baseline")
            if base in seeds_of and sorted(seeds_of[base]) != sorted(e["seeds"]):
                raise ValueError(f"encoder '{e['name']}': its seeds differ from its baseline '{base}''s")
            for k in e["seeds"]:
                one = {key: v for key, v in e.items() if key != "seeds"}
                one.update(name=f"{e['name']}-s{k}", seed=k, family=e["name"])
                if base in seeds_of:
                    one["baseline"] = f"{base}-s{k}"
                out.append(one)
        for e in out:  # a seedless encoder that names a seeded baseline: no single twin to pair with
            if (
                isinstance(e, dict)
                and e.get("baseline") in seeds_of
                and e.get("name") not in {f"{n}-s{k}" for n, ks in seeds_of.items() for k in ks}
            ):
                raise ValueError(
                    f"encoder '{e['name']}': baseline '{e['baseline']}' has seeds; give this encoder the same seeds"
                )
        return {**data, "encoders": out}

    @model_validator(mode="after")
    def _checks(self):
        names = [e.name for e in self.encoders]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"encoder names must be unique ({', '.join(dup)} repeated)")
        if any(e.kind == "oracle" for e in self.encoders) and self.data.simulate is None:
            raise ValueError("an oracle encoder needs a simulated screen (data.simulate)")
        for e in self.encoders:
            if e.baseline is not None and (e.baseline not in names or e.baseline == e.name):
                raise ValueError(f"encoder '{e.name}': baseline '{e.baseline}' is not another encoder of the run")
        for rung, name in (self.ladder.model_dump() if self.ladder else {}).items():
            if name is not None and name not in names:
                raise ValueError(f"ladder.{rung}: '{name}' is not an encoder of the run ({', '.join(names)})")
        for e in self.encoders:
            if (
                self.split.active
                and isinstance(e.train, dict)
                and "split" in e.train
                and Split.model_validate(e.train["split"]) != self.split
            ):
                raise ValueError(
                    f"encoders.{e.name}.train.split differs from the run's split; set the split once, at the top"
                )
        if self.probe is not None:
            if self.split.active:
                raise ValueError(
                    "split: the nucleus probe holds out space (train key holdout_width), not perturbations"
                )
            if any(e.kind != "model" for e in self.encoders):
                raise ValueError("the nucleus probe compares trained models: every encoder needs kind model")
            if self.probe.nuclei is None and self.data.example != "jump-pilot-field":
                raise ValueError("probe.nuclei: give the CellProfiler Nuclei.csv of the field")
        return self


def load_run_config(path: Path) -> RunConfig:
    cfg = parse_model(RunConfig, read_yaml(path), str(path))
    for i, e in enumerate(cfg.encoders):
        if isinstance(e.train, Path) and not e.train.exists():
            raise ConfigError(f"{path}: key 'encoders.{i}.train': {e.train} not found")
        if e.weights is not None and not e.weights.is_file():
            raise ConfigError(f"{path}: key 'encoders.{i}.weights': {e.weights} not found")
    if isinstance(cfg.data.ingest, Path) and not cfg.data.ingest.exists():
        raise ConfigError(f"{path}: key 'data.ingest': {cfg.data.ingest} not found")
    return cfg
