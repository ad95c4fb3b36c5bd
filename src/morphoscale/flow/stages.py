"""What each stage of a run does: make the store, train, embed (a model, pretrained weights,
hand-crafted features or the oracle), map, bench, probe, report. `Flow` (pipeline.py) plans
the stages and decides which to run; these are its actions, reading its config and folders."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import ConfigError, InputError
from ..io import write_text
from .config import EncoderSpec


class StageActions:
    """The stage actions of `Flow` (which holds cfg, out, store, screen, workers)."""

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
        if e.seed is not None:
            tcfg = tcfg.model_copy(update={"seed": e.seed})
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

    def _embed(self, e: EncoderSpec, **weights) -> None:
        """The encoder's embeddings of the store: its trained checkpoint, or `weights`."""
        from ..embed import embed

        s = e.embed
        checkpoint = None if weights else self.enc_dir(e) / "train" / "model.ckpt"
        embed(
            checkpoint,
            self.store,
            self.enc_dir(e) / "embeddings.h5ad",
            layer=s.layer,
            pooling=s.pooling,
            level=s.level,
            tile_size=s.tile_size,
            batch_size=s.batch_size,
            overwrite=True,
            progress=self.progress,
            **weights,
        )

    def _pretrained(self, e: EncoderSpec) -> None:
        self._embed(
            e,
            weights=Path(e.weights),
            weights_layout=e.weights_layout,
            arch=e.arch,
            mlp_bias=e.mlp_bias,
            input_norm=e.input_norm,
            mean=e.mean,
            std=e.std,
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
        from ..maps.build import build_map, read_embeddings, write_map

        out = self.enc_dir(e) / "map.h5ad"
        path = self.enc_dir(e) / "embeddings.h5ad"
        m, aligned = build_map(
            scored_part(read_embeddings(path), self._scored_wells(), str(path)),
            align=self.cfg.map.align,
            method=self.cfg.map.aggregate,
        )
        write_map(m, aligned, out, overwrite=True)

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
        if self.cfg.ladder is not None:
            from ..bench.ladder import Rungs, ladder_table

            rungs = Rungs(**self.cfg.ladder.model_dump())
            write_text(self.out / "ladder.csv", ladder_table(results, self.baselines(), rungs).to_csv(index=False))
        write_text(
            self.out / "paired.csv",
            summary.paired_table(results, self.baselines(), self.families()).to_csv(index=False),
        )
        write_report(self.out)
