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

from .. import __version__
from ..errors import ConfigError, InputError
from ..io import remove, write_text
from .config import STAGES, EncoderSpec, RunConfig

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


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_spec(value):
    """A train/ingest config given as a file: its content is what matters, not its name."""
    if isinstance(value, Path):
        from ..config import read_yaml

        return {"file": str(value), "content": read_yaml(value)}
    return value


class Flow:
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
        cfg = self.cfg
        d = cfg.data
        data_spec = {
            "simulate": d.simulate.model_dump() if d.simulate else None,
            "example": d.example,
            "ingest": _file_spec(d.ingest),
            "store": str(d.store) if d.store else None,
        }
        self.stages.append(Stage("data", "data", data_spec, [], self._data, [self.store]))
        if cfg.probe is not None:
            self.stages += [self._train_stage(e) for e in cfg.encoders]
            self.stages.append(
                Stage(
                    "bench:probe",
                    "bench",
                    cfg.probe.model_dump(mode="json"),
                    [f"train:{e.name}" for e in cfg.encoders],
                    self._probe,
                    [self.out / "probe" / "r2.csv"],
                )
            )
            self.stages.append(
                Stage(
                    "report",
                    "report",
                    {},
                    ["bench:probe"],
                    self._report,
                    [self.out / "recall.csv", self.out / "report.html"],
                )
            )
            return
        for e in cfg.encoders:
            ed = self.enc_dir(e)
            emb = ed / "embeddings.h5ad"
            if e.kind == "model":
                self.stages.append(self._train_stage(e))
                self.stages.append(
                    Stage(
                        f"embed:{e.name}",
                        "embed",
                        e.embed.model_dump(),
                        [f"train:{e.name}"],
                        lambda e=e: self._embed(e),
                        [emb],
                    )
                )
            elif e.kind == "features":
                self.stages.append(
                    Stage(
                        f"embed:{e.name}",
                        "embed",
                        {"features": e.features.model_dump()},
                        ["data"],
                        lambda e=e: self._features(e),
                        [emb],
                    )
                )
            elif e.kind == "pretrained":
                from ..io import file_sha256

                spec = {
                    **e.embed.model_dump(),
                    "weights_sha256": file_sha256(Path(e.weights)),
                    "weights_layout": e.weights_layout,
                    "arch": e.arch,
                }
                self.stages.append(
                    Stage(f"embed:{e.name}", "embed", spec, ["data"], lambda e=e: self._pretrained(e), [emb])
                )
            else:
                self.stages.append(
                    Stage(f"embed:{e.name}", "embed", {"oracle": True}, ["data"], lambda e=e: self._oracle(e), [emb])
                )
            self.stages.append(
                Stage(
                    f"map:{e.name}",
                    "map",
                    {**cfg.map.model_dump(), **self._split_spec()},
                    [f"embed:{e.name}"],
                    lambda e=e: self._map(e),
                    [ed / "map.h5ad"],
                )
            )
            self.stages.append(
                Stage(
                    f"bench:{e.name}",
                    "bench",
                    cfg.bench.model_dump(mode="json"),
                    [f"map:{e.name}"],
                    lambda e=e: self._bench(e),
                    [ed / "bench" / "summary.json"],
                )
            )
        self.stages.append(
            Stage(
                "report",
                "report",
                {"encoders": [e.name for e in cfg.encoders], "baselines": self.baselines()},
                [f"bench:{e.name}" for e in cfg.encoders],
                self._report,
                [self.out / "recall.csv", self.out / "paired.csv", self.out / "report.html"],
            )
        )

    def baselines(self) -> dict[str, str]:
        return {e.name: e.baseline for e in self.cfg.encoders if e.baseline}

    def _split_spec(self) -> dict:
        return {"split": self.cfg.split.model_dump()} if self.cfg.split.active else {}  # inactive: keys as before

    def _train_stage(self, e: EncoderSpec) -> Stage:
        self._encoders[f"train:{e.name}"] = e
        return Stage(
            f"train:{e.name}",
            "train",
            {"train": _file_spec(e.train), **self._split_spec()},
            ["data"],
            lambda: self._train(e),
            [self.enc_dir(e) / "train" / "model.ckpt"],
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
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "stages").mkdir(exist_ok=True)
        write_text(self.out / "run.yaml", yaml.safe_dump(json.loads(self.cfg.model_dump_json()), sort_keys=False))
        keys = self.keys()
        forced = set(STAGES[STAGES.index(start) :]) if start else set()
        todo = [s for s in self.stages if s.kind in forced or not self._cached(s, keys[s.id])]
        self.progress = progress
        console.rule(f"morphoscale run: {self.cfg.name} -> {self.out}")
        t0 = time.time()
        previous = {s.id: self._record(s).get("seconds") for s in todo}  # an earlier run's times, when there was one
        took: dict[str, list[float]] = {}
        ran_ahead: set[str] = set()
        for i, s in enumerate(self.stages, 1):
            if s not in todo:
                console.print(f"[dim][{i}/{len(self.stages)}] {s.id}: cached[/dim]")
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
            console.print(f"[bold][{i}/{len(self.stages)}] {s.id}[/bold] ...")
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

    def _clear(self, s: Stage) -> None:
        """A re-run replaces the stage's outputs; its record goes first, so a kill is never a cache hit."""
        self._record_path(s).unlink(missing_ok=True)
        for p in s.outputs:
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
                console.print(f"    {s.id}: done in {dt:.1f} s")
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
        try:
            return json.loads(self._record_path(s).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _cached(self, s: Stage, key: str) -> bool:
        return self._record(s).get("key") == key and all(Path(p).exists() for p in s.outputs)

    # --- the stages ---------------------------------------------------------------

    def _data(self) -> None:
        d = self.cfg.data
        if d.store:
            from ..data.store import ImageStore

            ImageStore(d.store)  # validates: complete, a morphoscale store
            return
        from ..data.ingest import IngestConfig, ingest, load_ingest_config

        if d.example:
            from ..data import examples

            icfg = load_ingest_config(examples.get(d.example) / "ingest.yaml", {"workers": self.workers})
        elif d.simulate:
            from ..simulate.screen import simulate

            simulate(
                self.screen,
                d.simulate.preset,
                seed=d.simulate.seed,
                workers=self.workers,
                overwrite=True,
                progress=self.progress,
            )
            icfg = load_ingest_config(None, {"format": "rxrx", "source": str(self.screen), "workers": self.workers})
        elif isinstance(d.ingest, Path):
            icfg = load_ingest_config(d.ingest, {"workers": self.workers})
        else:
            from ..config import parse_model

            icfg = parse_model(
                IngestConfig,
                {**d.ingest, **({"workers": self.workers} if self.workers else {})},
                "run config",
                "data.ingest",
            )
        ingest(icfg, self.store, overwrite=True, progress=self.progress)

    def _train(self, e: EncoderSpec, env: dict | None = None) -> None:
        from ..config import parse_model
        from ..train.fit import TrainConfig, load_train_config, train

        tcfg = (
            load_train_config(e.train)
            if isinstance(e.train, Path)
            else parse_model(TrainConfig, e.train, "run config", f"encoders.{e.name}.train")
        )
        if self.cfg.split.active:
            if tcfg.split.active and tcfg.split != self.cfg.split:
                raise ConfigError(
                    f"key 'encoders.{e.name}.train.split': differs from the run's split; set the split once, at the top"
                )
            tcfg = tcfg.model_copy(update={"split": self.cfg.split})
        gt = self.screen / "ground_truth"
        if tcfg.probe_every and tcfg.probe_truth is None and self.cfg.data.simulate:
            tcfg = tcfg.model_copy(update={"probe_truth": gt})  # the simulated truth adds the decoding probe
        if self.cfg.isolate_training or self.cfg.parallel_training > 1:
            self._train_in_subprocess(tcfg, self.enc_dir(e) / "train", env)
        else:
            train(tcfg, self.store, self.enc_dir(e) / "train", overwrite=True, progress=self.progress)

    def _train_in_subprocess(self, tcfg, out: Path, env: dict | None = None) -> None:
        """`morphoscale train` in a fresh process: what it measures (peak memory above all)
        belongs to this model alone, not to what earlier stages left resident."""
        import os
        import subprocess
        import sys
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            cfg_file = Path(tmp) / "train.yaml"
            cfg_file.write_text(yaml.safe_dump(tcfg.model_dump(mode="json"), sort_keys=False))
            cmd = [
                sys.executable,
                "-m",
                "morphoscale",
                "train",
                "--store",
                str(self.store),
                "--out",
                str(out),
                "--config",
                str(cfg_file),
                "--overwrite",
            ]
            quiet = not self.progress or self.cfg.parallel_training > 1  # bars of parallel runs would interleave
            res = subprocess.run(
                cmd + (["--quiet"] if quiet else []),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE if quiet else None,
                text=True,
                env={**os.environ, **env} if env else None,
            )
        if res.returncode:
            last = ((res.stderr or "").strip().splitlines() or [f"exit code {res.returncode}"])[-1]
            raise InputError(f"training {out} in its own process failed: {last.removeprefix('error: ')}")

    def _embed(self, e: EncoderSpec) -> None:
        from ..embed import embed

        s = e.embed
        embed(
            self.enc_dir(e) / "train" / "model.ckpt",
            self.store,
            self.enc_dir(e) / "embeddings.h5ad",
            layer=s.layer,
            pooling=s.pooling,
            level=s.level,
            tile_size=s.tile_size,
            batch_size=s.batch_size,
            overwrite=True,
            progress=self.progress,
        )

    def _pretrained(self, e: EncoderSpec) -> None:
        from ..embed import embed

        s = e.embed
        embed(
            None,
            self.store,
            self.enc_dir(e) / "embeddings.h5ad",
            layer=s.layer,
            pooling=s.pooling,
            level=s.level,
            tile_size=s.tile_size,
            batch_size=s.batch_size,
            overwrite=True,
            progress=self.progress,
            weights=Path(e.weights),
            weights_layout=e.weights_layout,
            arch=e.arch,
        )

    def _features(self, e: EncoderSpec) -> None:
        import os

        from ..features.extract import FeatureConfig, extract_features

        extract_features(
            self.store,
            self.enc_dir(e) / "embeddings.h5ad",
            FeatureConfig(**e.features.model_dump()),
            level="well",
            workers=self.workers or os.cpu_count() or 1,
            overwrite=True,
            progress=self.progress,
        )

    def _oracle(self, e: EncoderSpec) -> None:
        from ..maps.build import write_h5ad
        from ..simulate.oracle import oracle_embeddings

        path = self.enc_dir(e) / "embeddings.h5ad"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_h5ad(oracle_embeddings(self.screen), path, overwrite=True)

    def _scored_wells(self) -> set[tuple[str, str]] | None:
        """The held-out wells every map is made of (None: all), drawn once per run from the store."""
        if not self.cfg.split.active:
            return None
        if self._held_out is None:
            from ..data.split import scored_wells
            from ..data.store import ImageStore

            self._held_out = scored_wells(ImageStore(self.store).sites, self.cfg.split)
        return self._held_out

    def _map(self, e: EncoderSpec) -> None:
        from ..data.split import scored_part
        from ..maps.build import build_map, read_embeddings, wells_path, write_h5ad

        out = self.enc_dir(e) / "map.h5ad"
        path = self.enc_dir(e) / "embeddings.h5ad"
        m, aligned = build_map(
            scored_part(read_embeddings(path), self._scored_wells(), str(path)),
            align=self.cfg.map.align,
            method=self.cfg.map.aggregate,
        )
        write_h5ad(aligned, wells_path(out), overwrite=True)
        write_h5ad(m, out, overwrite=True)

    def compound_targets(self) -> Path | None:
        b = self.cfg.bench
        if b.compound_targets:
            return b.compound_targets
        gt = self.screen / "ground_truth" / "compound_targets.csv"
        return gt if self.cfg.data.simulate and gt.exists() else None

    def truth(self) -> Path | None:
        gt = self.screen / "ground_truth"
        return gt if self.cfg.bench.truth and self.cfg.data.simulate and gt.exists() else None

    def _bench(self, e: EncoderSpec) -> None:
        from ..bench.suite import run_bench

        ed = self.enc_dir(e)
        run_bench(
            ed / "map.h5ad",
            ed / "bench",
            raw=ed / "embeddings.h5ad",
            compound_targets=self.compound_targets(),
            clustering=self.cfg.bench.clustering,
            null_size=self.cfg.bench.null_size,
            overwrite=True,
            truth=self.truth(),
            metrics=self.cfg.bench.metrics,
            quick=self.cfg.bench.quick,
        )

    def nuclei_table(self) -> Path:
        if self.cfg.probe.nuclei:
            return self.cfg.probe.nuclei
        from ..data import examples

        return examples.get("jump-pilot-field") / "Nuclei.csv"

    def _probe(self) -> None:
        from ..bench.nuclei import run_probe

        p = self.cfg.probe
        run_probe(
            self.store,
            self.nuclei_table(),
            {e.name: self.enc_dir(e) / "train" for e in self.cfg.encoders},
            self.out / "probe",
            p.crop_size,
            p.folds,
        )

    def _report(self) -> None:
        from ..bench import summary
        from ..report.html import write_report

        names = [e.name for e in self.cfg.encoders]
        results = summary.run_results(self.out, names + list(self.baselines().values()))
        write_text(self.out / "recall.csv", summary.recall_table(results).to_csv(index=False))
        write_text(self.out / "paired.csv", summary.paired_table(results, self.baselines()).to_csv(index=False))
        write_report(self.out)
