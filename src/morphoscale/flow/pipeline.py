"""`morphoscale run`: simulate or ingest -> train -> embed -> map -> bench -> report, each
stage cached by the hash of its config and of the stages it reads.

A run folder:
    run.yaml                  the validated config, as run
    stages/<stage>.json       cache key, wall time and outputs of each finished stage
    screen/                   the simulated screen (data.simulate)
    store.zarr                the image store (unless data.store names one)
    encoders/<name>/          train/ (model), embeddings.h5ad, map.h5ad (+ map.wells.h5ad), bench/
    recall.csv                relationship recall of every encoder with its interval (the table printed at the end)
    paired.csv                each encoder with a baseline: every metric's paired difference and its interval
    report.html
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from rich.markup import escape

from .. import __version__
from ..errors import InputError
from ..io import OUTPUT_MARK, RUN_FOLDER, mark_output, os_error_message, output_kind, read_record, remove, write_text
from .config import STAGES, EncoderSpec, RunConfig
from .stages import StageActions

# first guesses of a stage's wall time on 2 CPU cores, for the ETA until one of its kind has run
TYPICAL_SECONDS = {"data": 30.0, "train": 120.0, "embed": 30.0, "map": 2.0, "bench": 15.0, "report": 10.0}


@dataclass
class Stage:
    id: str  # e.g. "train:mae"
    kind: str  # one of STAGES
    spec: dict  # what the stage's result depends on (besides its upstream stages)
    upstream: list[str]
    action: Callable[[], None]
    outputs: list[Path] = field(default_factory=list)
    # folders the stage's verb writes whole, removed before it runs again (the run folder is the
    # flow's own: a verb's --overwrite would refuse one an older version wrote without a mark)
    folders: list[Path] = field(default_factory=list)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_spec(value):
    """A train/ingest config given as a file: its content is what matters, not its name."""
    if isinstance(value, Path):
        from ..config import read_yaml

        return {"file": str(value), "content": read_yaml(value)}
    return value


class Flow(StageActions):
    """A run folder's stages, planned from the config, each run or taken from the cache."""

    def __init__(self, cfg: RunConfig, out: Path):
        self.cfg = cfg
        self.out = Path(out)
        self.store = Path(cfg.data.store) if cfg.data.store else self.out / "store.zarr"
        self.screen = self.out / "screen"
        self.workers = cfg.workers or None
        self.stages: list[Stage] = []
        self._encoders: dict[str, EncoderSpec] = {}  # train stage -> its encoder
        self._held_out: set[tuple[str, str]] | None = None  # the split's wells, once the store exists
        self._plan()

    # --- the plan -----------------------------------------------------------------

    def enc_dir(self, e: EncoderSpec) -> Path:
        return self.out / "encoders" / e.name

    def _plan(self) -> None:
        """The stages, in the order they run: data, then per encoder train, embed, map and bench,
        then the report (a real field: train, the nucleus probe, the report)."""
        cfg, d = self.cfg, self.cfg.data
        data_spec = {
            "simulate": d.simulate.model_dump() if d.simulate else None,
            "example": d.example,
            "ingest": _file_spec(d.ingest),
            "store": str(d.store) if d.store else None,
        }
        self.stages.append(Stage("data", "data", data_spec, [], self._data, [self.store], [self.screen]))
        if cfg.probe is not None:
            self._plan_probe()
            return
        for e in cfg.encoders:
            self._plan_encoder(e)
        report_spec = {"encoders": [e.name for e in cfg.encoders], "baselines": self.baselines()}
        outputs = [self.out / "recall.csv", self.out / "paired.csv", self.out / "report.html"]
        if cfg.ladder is not None:
            report_spec["ladder"] = cfg.ladder.model_dump()
            outputs.insert(2, self.out / "ladder.csv")
        self.stages.append(
            Stage("report", "report", report_spec, [f"bench:{e.name}" for e in cfg.encoders], self._report, outputs)
        )

    def _plan_probe(self) -> None:
        """A real field: each model trained, then the nucleus probe in place of maps and benchmarks."""
        cfg = self.cfg
        self.stages += [self._train_stage(e) for e in cfg.encoders]
        upstream = [f"train:{e.name}" for e in cfg.encoders]
        probe_spec = cfg.probe.model_dump(mode="json")
        self.stages.append(
            Stage("bench:probe", "bench", probe_spec, upstream, self._probe, [self.out / "probe" / "r2.csv"])
        )
        outputs = [self.out / "recall.csv", self.out / "report.html"]
        self.stages.append(Stage("report", "report", {}, ["bench:probe"], self._report, outputs))

    def _plan_encoder(self, e: EncoderSpec) -> None:
        """One encoder's stages: (train,) embed, map, bench."""
        ed = self.enc_dir(e)
        if e.kind == "model":
            self.stages.append(self._train_stage(e))
        self.stages.append(self._embed_stage(e, ed / "embeddings.h5ad"))
        map_spec = {**self.cfg.map.model_dump(), **self._split_spec()}
        self.stages.append(
            Stage(f"map:{e.name}", "map", map_spec, [f"embed:{e.name}"], lambda e=e: self._map(e), [ed / "map.h5ad"])
        )
        bench_spec = self.cfg.bench.model_dump(mode="json")
        outputs = [ed / "bench" / "summary.json"]
        self.stages.append(
            Stage(
                f"bench:{e.name}",
                "bench",
                bench_spec,
                [f"map:{e.name}"],
                lambda e=e: self._bench(e),
                outputs,
                [ed / "bench"],
            )
        )

    def _embed_stage(self, e: EncoderSpec, emb: Path) -> Stage:
        """How an encoder's embeddings are made: a trained model, hand-crafted features,
        pretrained weights or the oracle; each with what its result depends on."""
        if e.kind == "model":
            return Stage(
                f"embed:{e.name}", "embed", e.embed.model_dump(), [f"train:{e.name}"], lambda: self._embed(e), [emb]
            )
        if e.kind == "features":
            spec = {"features": e.features.model_dump()}
            return Stage(f"embed:{e.name}", "embed", spec, ["data"], lambda: self._features(e), [emb])
        if e.kind == "pretrained":
            from ..io import file_sha256

            spec = {
                **e.embed.model_dump(),
                "weights_sha256": file_sha256(Path(e.weights)),
                "weights_layout": e.weights_layout,
                "arch": e.arch,
                "reading": 2,  # 2: OpenPhenom's legacy block and each layout's own input normalization (#42)
                **{
                    k: getattr(e, k)
                    for k in ("mlp_bias", "input_norm", "mean", "std")
                    if getattr(e, k) not in (None, "auto")
                },
            }
            return Stage(f"embed:{e.name}", "embed", spec, ["data"], lambda: self._pretrained(e), [emb])
        return Stage(f"embed:{e.name}", "embed", {"oracle": True}, ["data"], lambda: self._oracle(e), [emb])

    def baselines(self) -> dict[str, str]:
        return {e.name: e.baseline for e in self.cfg.encoders if e.baseline}

    def families(self) -> dict[str, str]:
        """Each seeded encoder's family (the name its training seeds share)."""
        return {e.name: e.family for e in self.cfg.encoders if e.family}

    def _split_spec(self) -> dict:
        return {"split": self.cfg.split.model_dump()} if self.cfg.split.active else {}  # inactive: keys as before

    def _train_stage(self, e: EncoderSpec) -> Stage:
        self._encoders[f"train:{e.name}"] = e
        return Stage(
            f"train:{e.name}",
            "train",
            {"train": _file_spec(e.train), **self._split_spec(), **({"seed": e.seed} if e.seed is not None else {})},
            ["data"],
            lambda: self._train(e),
            [self.enc_dir(e) / "train" / "model.ckpt"],
            [self.enc_dir(e) / "train"],
        )

    def keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for s in self.stages:
            keys[s.id] = _hash(
                {"stage": s.id, "spec": s.spec, "upstream": [keys[u] for u in s.upstream], "version": __version__}
            )
        return keys

    # --- running ------------------------------------------------------------------

    def run(self, start: str | None = None, progress: bool = True, console=None) -> dict:
        from rich.console import Console

        console = console or Console(stderr=True)
        if start is not None and start not in STAGES:
            raise InputError(f"--from: '{start}' is not a stage; stages: {', '.join(STAGES)}")
        if self.cfg.data.store:  # a store named in the config is opened before the run folder is made
            from ..data.store import ImageStore

            _ = ImageStore(self.store).sites
        self._claim_folder()
        (self.out / "stages").mkdir(exist_ok=True)
        write_text(self.out / "run.yaml", yaml.safe_dump(json.loads(self.cfg.model_dump_json()), sort_keys=False))
        keys = self.keys()
        forced = set(STAGES[STAGES.index(start) :]) if start else set()
        todo = [s for s in self.stages if s.kind in forced or not self._cached(s, keys[s.id])]
        self.progress = progress
        console.rule(escape(f"morphoscale run: {self.cfg.name} -> {self.out}"))
        t0 = time.time()
        previous = {s.id: self._record(s).get("seconds") for s in todo}  # an earlier run's times, when there was one
        took: dict[str, list[float]] = {}
        ran_ahead: set[str] = set()
        for i, s in enumerate(self.stages, 1):
            if s not in todo:
                console.print(f"[dim][{i}/{len(self.stages)}] {escape(s.id)}: cached[/dim]")
                continue
            if s.id in ran_ahead:
                continue
            if s.kind == "train" and self.cfg.parallel_training > 1:
                batch = [t for t in todo if t.kind == "train"]
                console.print(
                    f"[bold][{i}/{len(self.stages)}] {len(batch)} train stages, {self.cfg.parallel_training} at a time[/bold] ..."
                )
                for t, dt in self._train_parallel(batch, console):
                    took.setdefault("train", []).append(dt)
                    self._finish(t, keys[t.id], dt)
                ran_ahead.update(t.id for t in batch)
                continue
            console.print(f"[bold][{i}/{len(self.stages)}] {escape(s.id)}[/bold] ...")
            ts = time.time()
            self._clear(s)
            s.action()
            dt = time.time() - ts
            took.setdefault(s.kind, []).append(dt)
            rest = [r for r in todo[todo.index(s) + 1 :] if r.id not in ran_ahead]
            left = sum(
                previous[r.id] or (np.mean(took[r.kind]) if r.kind in took else TYPICAL_SECONDS[r.kind]) for r in rest
            )
            eta = f", about {left / 60:.1f} min left ({len(rest)} stages)" if rest else ""
            console.print(f"    done in {dt:.1f} s; elapsed {(time.time() - t0) / 60:.1f} min{eta}")
            self._finish(s, keys[s.id], dt)
        return {
            "out": str(self.out),
            "ran": [s.id for s in todo],
            "cached": [s.id for s in self.stages if s not in todo],
        }

    def _claim_folder(self) -> None:
        """The run folder: new, empty, or a run folder already (marked, or with the run.yaml and
        stages/ of a version before the mark). Its stages remove what they re-make, so a
        folder of anything else is refused."""
        out = self.out
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and output_kind(out) != RUN_FOLDER:
            if not ((out / "run.yaml").is_file() and (out / "stages").is_dir()):
                raise InputError(
                    f"--out {out}: not a run folder (no {OUTPUT_MARK} saying so); a run removes what its stages "
                    "re-make, so choose a new or empty folder"
                )
        try:
            out.mkdir(parents=True, exist_ok=True)
            mark_output(out, RUN_FOLDER)
        except OSError as e:
            raise InputError(os_error_message(out, e)) from None

    def _clear(self, s: Stage) -> None:
        """A re-run replaces the stage's outputs; its record goes first, so a kill is never a cache hit."""
        self._record_path(s).unlink(missing_ok=True)
        for p in s.outputs + s.folders:
            if p != self.store or not self.cfg.data.store:
                remove(p)

    def _finish(self, s: Stage, key: str, seconds: float) -> None:
        write_text(
            self._record_path(s),
            json.dumps(
                {
                    "key": key,
                    "seconds": round(seconds, 2),
                    "outputs": [str(p) for p in s.outputs],
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
            ),
        )

    def _train_parallel(self, batch: list[Stage], console) -> list[tuple[Stage, float]]:
        """Train stages `parallel_training` at a time, each in its own process (on a machine
        with GPUs, each on one GPU of its own). Finished ones are kept when another fails."""
        import queue
        from concurrent.futures import ThreadPoolExecutor

        import torch

        n = self.cfg.parallel_training
        gpus = torch.cuda.device_count()
        slots: queue.Queue = queue.Queue()
        for k in range(n):
            slots.put(k)

        def one(s: Stage) -> float:
            slot = slots.get()
            try:
                ts = time.time()
                self._clear(s)
                self._train(self._encoders[s.id], env={"CUDA_VISIBLE_DEVICES": str(slot % gpus)} if gpus else None)
                dt = time.time() - ts
                console.print(f"    {escape(s.id)}: done in {dt:.1f} s")
                return dt
            finally:
                slots.put(slot)

        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [(s, pool.submit(one, s)) for s in batch]
        done, errors = [], []
        for s, f in futures:
            if f.exception() is None:
                done.append((s, f.result()))
            else:
                errors.append(f.exception())
        if errors:
            for s, dt in done:  # what finished stays finished: a re-run resumes after it
                self._finish(s, self.keys()[s.id], dt)
            raise errors[0]
        return done

    def _record_path(self, s: Stage) -> Path:
        return self.out / "stages" / f"{s.id.replace(':', '--')}.json"

    def _record(self, s: Stage) -> dict:
        return read_record(self._record_path(s))

    def _cached(self, s: Stage, key: str) -> bool:
        return self._record(s).get("key") == key and all(Path(p).exists() for p in s.outputs)

    # --- the stages ---------------------------------------------------------------
