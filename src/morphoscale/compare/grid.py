"""`morphoscale compare`: a grid of training setups under one budget, each through the same
embed -> map -> bench path, with what each run cost.

The grid is models x augmentation x crop strategy x seed. Every setup becomes an encoder of
one `morphoscale run` flow, so the data are shared, every stage is cached (a grid resumes
where it stopped) and the report covers every setup. The budget is equal images seen by
default: each setup gets max_steps = images // (images per step), where images per step
counts every view (batch x views, or batch x (global + local crops)); `steps` gives every
setup the same optimizer steps, `seconds` the same wall time (Lightning's max_time).
What each run cost comes from its resources.json (train/accounting.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..bench.summary import PAIRED_METRICS, RESULT_METRICS
from ..config import parse_model, read_yaml
from ..data.split import Split
from ..errors import ConfigError
from ..flow.config import BenchSpec, DataSpec, EmbedSpec, EncoderSpec, MapSpec, RunConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSpec(_Strict):
    """One model of the grid: a preset, optional overrides, and the name tables use."""

    name: str
    model: str
    model_overrides: dict = Field(default_factory=dict)
    # the reference this model's cells are paired with (its untrained twin); default: the grid's baseline
    baseline: str | None = None


class Budget(_Strict):
    """Exactly one: images seen (default), optimizer steps, or wall seconds per setup."""

    images: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    seconds: float | None = Field(None, gt=0)
    step_cap: int = Field(100_000, ge=1)  # seconds budget: the schedule's nominal length

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("images", "steps", "seconds") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of images, steps, seconds (got {', '.join(given) or 'none'})")
        return self


class CompareConfig(_Strict):
    """A fair grid: every setup on the same data, split and budget."""

    name: str = "compare"
    data: DataSpec
    models: list[ModelSpec] = Field(min_length=1)
    augment: list[Literal["none", "random"]] = ["none"]
    crop: list[Literal["one", "multi"]] = ["one"]
    seeds: list[int] = [0]
    budget: Budget
    # held out of every setup's training; maps are made and scored on it (labels never leak)
    split: Split = Split()
    train: dict = Field(default_factory=dict)  # train config keys shared by every setup (batch_size, lr, ...)
    embed: EmbedSpec = EmbedSpec()
    map: MapSpec = MapSpec()
    bench: BenchSpec = BenchSpec()
    # scored beside the grid, on the same split, outside the budget: the hand-crafted features,
    # the oracle, an untrained model (kind: model, train: {random_init: true, ...})
    references: list[EncoderSpec] = []
    # the reference every cell is compared with, paired (default: the first untrained model reference)
    baseline: str | None = None
    workers: int | None = None
    isolate: bool = True  # each cell trains in its own process: its peak memory is its own, not earlier cells' residue
    # cells trained at once (one GPU each where there are GPUs); above 1, their times and memory
    # are measured while sharing the machine: compare costs from one-at-a-time grids only
    parallel: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _names(self):
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.]*", n)]
        if bad:
            raise ValueError(f"model name '{bad[0]}': letters, digits, '_' and '.' only")
        cells = {f"{m}-{a}-{c}-s{k}" for m in names for a in self.augment for c in self.crop for k in self.seeds}
        taken = sorted(cells & {r.name for r in self.references})
        if taken:
            raise ValueError(f"reference name '{taken[0]}' is the name of a cell of the grid")
        refs = {r.name for r in self.references}
        for b in [self.baseline] + [m.baseline for m in self.models]:
            if b is not None and b not in refs:
                raise ValueError(f"baseline '{b}' is not one of the references")
        reserved = {"model", "model_overrides", "augment", "crop", "seed", "max_steps", "max_time_seconds", "split"}
        clash = sorted(reserved & set(self.train))
        if clash:
            raise ValueError(f"train.{clash[0]} is set by the grid")
        return self


def load_compare_config(path: Path) -> CompareConfig:
    return parse_model(CompareConfig, read_yaml(path), str(path))


def images_per_step(train: dict) -> int:
    from ..train.fit import TrainConfig

    t = TrainConfig(**{k: v for k, v in train.items() if k in TrainConfig.model_fields})
    return t.batch_size * ((t.n_global + t.n_local) if t.crop == "multi" else t.views)


def setups(cfg: CompareConfig) -> list[dict]:
    """Every cell of the grid: its name, axes and full train config."""
    from ..models.registry import PRESETS, preset_info

    out = []
    for m in cfg.models:
        if m.model not in PRESETS:
            raise ConfigError(f"key 'models': unknown preset '{m.model}'")
        multi_view = preset_info(m.model).multi_view
        for aug in cfg.augment:
            for crop in cfg.crop:
                for seed in cfg.seeds:
                    train = {
                        **cfg.train,
                        "model": m.model,
                        "model_overrides": m.model_overrides,
                        "augment": aug,
                        "crop": crop,
                        "seed": seed,
                    }
                    if multi_view and crop == "one":
                        train["views"] = 2  # BYOL learns from two views of a crop
                    per_step = images_per_step(train)
                    b = cfg.budget
                    if b.images is not None:
                        steps, rest = divmod(b.images, per_step)
                        if steps < 1 or rest:
                            raise ConfigError(
                                f"key 'budget.images': {b.images} is not a multiple of the {per_step} images per step of "
                                f"{m.name} ({aug}, crop {crop}); the setups would see different numbers of images"
                            )
                        train["max_steps"] = steps
                    elif b.steps is not None:
                        train["max_steps"] = b.steps
                    else:
                        train["max_steps"] = b.step_cap
                        train["max_time_seconds"] = b.seconds
                    out.append(
                        {
                            "name": f"{m.name}-{aug}-{crop}-s{seed}",
                            "model": m.name,
                            "preset": m.model,
                            "augment": aug,
                            "crop": crop,
                            "seed": seed,
                            "images_per_step": per_step,
                            "train": train,
                            "baseline": m.baseline or baseline_of(cfg),
                        }
                    )
    return out


def baseline_of(cfg: CompareConfig) -> str | None:
    """The reference each cell is paired with: the named one, else the first untrained model."""
    if cfg.baseline:
        return cfg.baseline
    return next(
        (
            r.name
            for r in cfg.references
            if r.kind == "model" and isinstance(r.train, dict) and r.train.get("random_init")
        ),
        None,
    )


def run_config(cfg: CompareConfig) -> RunConfig:
    encoders = [
        {
            "name": s["name"],
            "kind": "model",
            "train": s["train"],
            "embed": cfg.embed.model_dump(),
            "baseline": s["baseline"],
        }
        for s in setups(cfg)
    ]
    encoders += [r.model_dump() for r in cfg.references]
    return RunConfig.model_validate(
        {
            "name": cfg.name,
            "data": cfg.data.model_dump(),
            "encoders": encoders,
            "split": cfg.split.model_dump(),
            "map": cfg.map.model_dump(),
            "bench": cfg.bench.model_dump(),
            "workers": cfg.workers,
            "isolate_training": cfg.isolate,
            "parallel_training": cfg.parallel,
        }
    )


COST_KEYS = (
    "optimizer_steps",
    "images_seen",
    "wall_seconds",
    "images_per_second",
    "peak_rss_mb",
    "peak_gpu_mb",
    "parameters",
    "flops_per_image",
    "training_flops",
)  # of each run's train/resources.json


def results_table(
    run_dir: Path, cells: list[dict], references: list[EncoderSpec] = (), baseline: str | None = None
) -> pd.DataFrame:
    """One row per setup: axes, cost (resources.json), quality (bench summary, with 95% intervals)
    and, against the baseline reference, the paired difference of the headline metrics; then one
    row per reference encoder (augment and crop "-": not part of the grid)."""
    import json

    from ..bench import summary

    refs = [
        {
            "name": r.name,
            "model": r.name,
            "preset": r.kind,
            "augment": "-",
            "crop": "-",
            "seed": 0,
            "images_per_step": None,
            "train": {},
        }
        for r in references
    ]
    results = summary.run_results(run_dir, [s["name"] for s in cells + refs])
    rows = []
    for s in cells + refs:
        resources = Path(run_dir) / "encoders" / s["name"] / "train" / "resources.json"
        cost = json.loads(resources.read_text()) if resources.exists() else {}
        row = {k: s[k] for k in ("name", "model", "preset", "augment", "crop", "seed", "images_per_step")}
        row["max_steps"] = s["train"].get("max_steps")
        row.update({k: cost.get(k) for k in COST_KEYS})
        r = results.get(s["name"])
        if r is not None:
            row.update(_quality(r))
            base = s.get("baseline") or baseline
            if base and base in results and s["name"] != base:
                row["baseline"] = base
                row.update(_paired(summary.paired(r, results[base]).set_index("metric")))
        rows.append(row)
    return pd.DataFrame(rows)


def _quality(r) -> dict:
    """The headline metrics of a bench result with their intervals, and random recall."""
    row = {}
    for short, metric in RESULT_METRICS.items():
        e = r.estimates.get(metric)
        if e is not None:
            row[short], row[f"{short}_ci_low"], row[f"{short}_ci_high"] = e["value"], e["ci_low"], e["ci_high"]
    rec = r.recall()
    if len(rec):
        row["random_recall"] = float(rec["random_recall"].iloc[0])
    return row


def _paired(p: pd.DataFrame) -> dict:
    """The paired differences from the baseline, with their intervals."""
    row = {}
    for short in PAIRED_METRICS:
        m = RESULT_METRICS[short]
        if m in p.index:
            row[f"{short}_minus_baseline"] = p.loc[m, "difference"]
            row[f"{short}_minus_baseline_ci_low"] = p.loc[m, "ci_low"]
            row[f"{short}_minus_baseline_ci_high"] = p.loc[m, "ci_high"]
    return row


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of every numeric column, per (model, augment, crop)."""
    keys = ["model", "augment", "crop"]
    num = [
        c
        for c in results.columns
        if c not in keys + ["name", "preset", "seed"] and pd.api.types.is_numeric_dtype(results[c])
    ]
    g = results.groupby(keys, sort=False)[num]
    mean, sd = g.mean(), g.std(ddof=1)
    out = mean.add_suffix("_mean").join(sd.add_suffix("_sd"))
    out.insert(0, "n_seeds", results.groupby(keys, sort=False).size())
    return out.reset_index()


def plots(results: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "recall_CORUM" if "recall_CORUM" in results.columns else None
    paths = []
    if metric is None or results[metric].isna().all():
        return paths
    rnd = results["random_recall"].dropna().iloc[0] if results["random_recall"].notna().any() else None
    refs = results[results["augment"] == "-"]
    results = results[results["augment"] != "-"]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for name, g in results.groupby("model", sort=False):
        if f"{metric}_ci_low" in g.columns:
            err = np.vstack([g[metric] - g[f"{metric}_ci_low"], g[f"{metric}_ci_high"] - g[metric]]).clip(0)
            ax.errorbar(g["training_flops"], g[metric], yerr=np.nan_to_num(err), fmt="o", capsize=3, label=name)
        else:
            ax.scatter(g["training_flops"], g[metric], label=name)
        gm = g.groupby("training_flops")[metric].mean()
        ax.plot(gm.index, gm.values, alpha=0.5)
    for (_, r), color in zip(refs.iterrows(), ("grey", "olive", "teal", "purple")):
        ax.axhline(r[metric], color=color, ls=":", label=f"{r['name']} ({r[metric]:.2f})")
    if rnd is not None:
        ax.axhline(rnd, color="crimson", ls="--", label=f"random ({rnd:.2f})")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (counted)")
    ax.set_ylabel("CORUM recall (5% / 95%)")
    ax.legend(
        frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5)
    )  # beside the points, never over them
    paths.append(_save(fig, out / "recall_vs_flops.png"))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, g in results.groupby("model", sort=False):
        a.scatter(g["wall_seconds"], g[metric], label=name)
        b.scatter(g["peak_rss_mb"], g[metric], label=name)
    for ax_, lab in ((a, "training wall time (s)"), (b, "peak resident memory of training (MB)")):
        if rnd is not None:
            ax_.axhline(rnd, color="crimson", ls="--")
        ax_.set_xlabel(lab)
        ax_.set_ylabel("CORUM recall (5% / 95%)")
    a.legend(frameon=False, fontsize=8)
    paths.append(_save(fig, out / "recall_vs_cost.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare(
    cfg: CompareConfig, out: Path, start: str | None = None, progress: bool = True, console=None
) -> pd.DataFrame:
    from ..flow.pipeline import Flow
    from ..io import write_text
    from ..report.grid import markdown_table
    from ..report.html import write_report

    cells = setups(cfg)
    flow = Flow(run_config(cfg), out)
    flow.run(start, progress=progress, console=console)
    results = results_table(flow.out, cells, cfg.references, baseline_of(cfg))
    summary = summarize(results)
    folder = flow.out / "compare"
    folder.mkdir(exist_ok=True)
    write_text(folder / "results.csv", results.to_csv(index=False))
    write_text(folder / "summary.csv", summary.to_csv(index=False))
    write_text(folder / "results.md", markdown_table(results))
    plots(results, folder)
    write_report(flow.out)
    return results
