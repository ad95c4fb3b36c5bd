"""`morphoscale simulate`: write a simulated screen in the RxRx layout, plus its ground truth.

OUT/metadata.csv, OUT/images/{experiment}/Plate{plate}/{well}_s{site}_w{1..6}.png (uint8),
OUT/ground_truth/: wells.csv (the oracle: every well's morphology parameters), phenotypes.csv,
complexes.csv, pairs.csv, compound_targets.csv, config.json.

Every site's pixels come from its own random stream seeded by (seed, site index): the
same seed gives bit-identical files whatever the number of workers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import InputError
from ..io import IMAGE_STORE, check_output, commit_dir, mark_output, partial_dir, write_text
from ..parallel import process_map
from .biology import PARAMETERS, BiologyConfig, make_biology
from .layout import LayoutConfig, make_layout
from .render import CHANNELS, Optics, Renderer


@dataclass
class NuisanceConfig:
    batch_gain_sd: float = 0.35  # log-normal per batch and channel
    batch_offset: tuple[float, float] = (0.01, 0.08)
    plate_gain_sd: float = 0.1
    vignetting: tuple[float, float] = (0.1, 0.35)  # per plate
    edge_gain: float = 0.85  # edge wells: dimmer ...
    edge_cells: float = 0.8  # ... and fewer cells
    focus_blur_sd: float = 0.5  # |N(0, sd)| px per site
    out_of_focus: float = 0.08  # fraction of sites with 1.5 px more blur
    batch_biology_sd: float = 0.25  # per batch shift of every morphology parameter (in the oracle)
    well_sd: float = 0.35  # well-to-well biological variation (in the oracle)
    site_sd: float = 0.15  # site-to-site variation within a well (not in the oracle)
    guide_efficiency: tuple[float, float] = (0.6, 1.0)


@dataclass
class Preset:
    size: int
    biology: BiologyConfig
    layout: LayoutConfig
    nuisance: NuisanceConfig = field(default_factory=NuisanceConfig)


PRESETS = {
    "tiny": Preset(
        64,
        BiologyConfig(n_complexes=6, n_pairs=4, n_compounds=3, concentrations=(0.1, 10.0)),
        LayoutConfig(n_batches=2, plate_size=96, sites_per_well=1, guides_per_gene=1, replicates=2),
    ),
    "demo": Preset(
        128,
        BiologyConfig(n_complexes=25, n_pairs=10, n_compounds=8),
        LayoutConfig(n_batches=3, plate_size=96, sites_per_well=2, guides_per_gene=2, replicates=2),
    ),
    "large": Preset(
        256,
        BiologyConfig(n_complexes=150, n_pairs=60, n_compounds=40),
        LayoutConfig(n_batches=4, plate_size=384, sites_per_well=4, guides_per_gene=3, replicates=2),
    ),
}


def plan(preset: Preset, seed: int, annotation_dir: Path):
    """Everything but the pixels: biology, layout, per-well oracle, per-site optics."""
    rng = np.random.default_rng([seed, 0])
    bio = make_biology(annotation_dir, preset.biology, rng)
    layout = make_layout(
        bio.genes, sorted(bio.compounds.compound.unique()), preset.biology.concentrations, preset.layout, rng
    )
    nz = preset.nuisance
    batches = sorted(layout.experiment.unique())
    gain = {b: np.exp(rng.normal(0, nz.batch_gain_sd, len(CHANNELS))) for b in batches}
    offset = {b: rng.uniform(*nz.batch_offset, len(CHANNELS)) for b in batches}
    bio_shift = {b: rng.normal(0, nz.batch_biology_sd, len(PARAMETERS)) for b in batches}
    plates = layout[["experiment", "plate"]].drop_duplicates().itertuples(index=False)
    plate_gain = {(e, p): np.exp(rng.normal(0, nz.plate_gain_sd, len(CHANNELS))) for e, p in plates}
    vign = {k: float(rng.uniform(*nz.vignetting)) for k in plate_gain}
    guide_eff = {gd: float(rng.uniform(*nz.guide_efficiency)) for gd in sorted(set(layout.guide) - {""})}

    Z = np.zeros((len(layout), len(PARAMETERS)))
    for i, r in enumerate(layout.itertuples(index=False)):
        if r.perturbation_type == "gene":
            base = bio.phenotype[r.perturbation] * guide_eff[r.guide]
        elif r.perturbation_type == "compound":
            base = bio.compound_phenotype(r.perturbation, r.concentration)
        else:
            base = np.zeros(len(PARAMETERS))
        Z[i] = base + bio_shift[r.experiment] + rng.normal(0, nz.well_sd, len(PARAMETERS))
    wells = pd.concat([layout, pd.DataFrame(Z, columns=PARAMETERS)], axis=1)
    wells["guide_efficiency"] = wells["guide"].map(guide_eff)
    nuisance = {"gain": gain, "offset": offset, "plate_gain": plate_gain, "vignetting": vign}
    return bio, wells, nuisance


def site_jobs(wells: pd.DataFrame, preset: Preset, nuisance: dict) -> list[dict]:
    nz = preset.nuisance
    jobs = []
    for w, r in enumerate(wells.itertuples(index=False)):
        key = (r.experiment, r.plate)
        g = nuisance["gain"][r.experiment] * nuisance["plate_gain"][key] * (nz.edge_gain if r.edge else 1.0)
        for s in range(1, preset.layout.sites_per_well + 1):
            jobs.append(
                {
                    "index": len(jobs),
                    "well_row": w,
                    "experiment": r.experiment,
                    "plate": int(r.plate),
                    "well": r.well,
                    "site": s,
                    "gain": g,
                    "offset": nuisance["offset"][r.experiment],
                    "vignetting": nuisance["vignetting"][key],
                    "cells": nz.edge_cells if r.edge else 1.0,
                }
            )
    return jobs


_W: dict = {}


def _init(size: int, out: str, seed: int, Z: np.ndarray, nz: NuisanceConfig) -> None:
    _W.update(renderer=Renderer(size), out=Path(out), seed=seed, Z=Z, nz=nz)


def image_path(root: Path, experiment: str, plate: int, well: str, site: int, channel: int) -> Path:
    return root / "images" / experiment / f"Plate{plate}" / f"{well}_s{site}_w{channel}.png"


def _render_site(job: dict) -> int:
    from PIL import Image

    root, nz = _W["out"], _W["nz"]
    paths = [
        image_path(root, job["experiment"], job["plate"], job["well"], job["site"], c + 1) for c in range(len(CHANNELS))
    ]
    if all(p.exists() for p in paths):
        return job["index"]  # resumed: already written
    rng = np.random.default_rng([_W["seed"], 1, job["index"]])
    z = _W["Z"][job["well_row"]] + rng.normal(0, nz.site_sd, _W["Z"].shape[1])
    blur = abs(rng.normal(0, nz.focus_blur_sd)) + (1.5 if rng.random() < nz.out_of_focus else 0.0)
    optics = Optics(gain=job["gain"], offset=job["offset"], vignetting=job["vignetting"], focus_blur=blur)
    img = _W["renderer"].render(z, optics, rng, n_cells_scale=job["cells"])
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for c, p in enumerate(paths):
        tmp = p.with_name(f".{p.name}.tmp")
        Image.fromarray(img[c]).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, p)
    return job["index"]


def simulate(
    out: Path,
    preset_name: str = "demo",
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..data import examples

    if preset_name not in PRESETS:
        raise InputError(f"unknown preset '{preset_name}'; choose one of {', '.join(PRESETS)}")
    if not 0 <= seed < 2**32:
        raise InputError(f"--seed: must be between 0 and 2**32 - 1, got {seed}")
    if workers is not None and workers < 1:
        raise InputError(f"--workers: must be at least 1, got {workers}")
    out = Path(out)
    check_output(out, overwrite, IMAGE_STORE)
    preset = PRESETS[preset_name]
    ann = examples.get("annotations")
    bio, wells, nuisance = plan(preset, seed, ann)
    jobs = site_jobs(wells, preset, nuisance)
    part = partial_dir(out)
    stamp = {"preset": preset_name, "seed": seed, "morphoscale_version": __version__}
    if part.exists():
        old = (
            json.loads((part / "ground_truth" / "config.json").read_text())
            if (part / "ground_truth" / "config.json").exists()
            else {}
        )
        if {k: old.get(k) for k in stamp} != stamp:
            shutil.rmtree(part)
    (part / "ground_truth").mkdir(parents=True, exist_ok=True)
    _write_truth(part, preset_name, preset, seed, bio, wells, nuisance)
    Z = wells[PARAMETERS].to_numpy()
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    init = (preset.size, str(part), seed, Z, preset.nuisance)
    t0 = time.perf_counter()
    cols = (
        TextColumn("simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} sites/s"),
        TimeRemainingColumn(),
    )
    with process_map(_render_site, jobs, workers, _init, init, chunksize=8) as results:
        with Progress(*cols, disable=not progress) as bar:
            task = bar.add_task("simulate", total=len(jobs), rate="-")
            for k, _ in enumerate(results, start=1):
                if k % 16 == 0 or k == len(jobs):
                    bar.update(task, completed=k, rate=f"{k / (time.perf_counter() - t0):.0f}")
    _write_metadata(part, jobs, wells)
    mark_output(part, IMAGE_STORE)
    commit_dir(part, out)
    return out


def _write_metadata(root: Path, jobs: list[dict], wells: pd.DataFrame) -> None:
    rows = []
    for j in jobs:
        w = wells.iloc[j["well_row"]]
        control = w.perturbation_type == "control"
        rows.append(
            {
                "site_id": f"{j['experiment']}_{j['plate']}_{j['well']}_{j['site']}",
                "well_id": f"{j['experiment']}_{j['plate']}_{j['well']}",
                "cell_type": "SIM-U2OS",
                "dataset": "simulated",
                "experiment": j["experiment"],
                "plate": j["plate"],
                "well": j["well"],
                "site": j["site"],
                "well_type": "negative_control" if control else "treatment",
                "sirna": w.perturbation,
                "perturbation_type": w.perturbation_type,
                "guide": w.guide,
                "concentration": "" if pd.isna(w.concentration) else w.concentration,
            }
        )
    write_text(root / "metadata.csv", pd.DataFrame(rows).to_csv(index=False))


def _write_truth(
    root: Path, preset_name: str, preset: Preset, seed: int, bio, wells: pd.DataFrame, nuisance: dict
) -> None:
    gt = root / "ground_truth"
    wells.to_csv(gt / "wells.csv", index=False)
    ph = pd.DataFrame([bio.phenotype[g] for g in bio.genes], columns=PARAMETERS)
    ph.insert(0, "has_phenotype", [bio.has_phenotype[g] for g in bio.genes])
    ph.insert(0, "gene", bio.genes)
    ph.to_csv(gt / "phenotypes.csv", index=False)
    bio.memberships.to_csv(gt / "complexes.csv", index=False)
    bio.pair_groups.to_csv(gt / "pairs.csv", index=False)
    bio.compounds.to_csv(gt / "compound_targets.csv", index=False)
    config = {
        "preset": preset_name,
        "seed": seed,
        "morphoscale_version": __version__,
        "image_size": preset.size,
        "channels": CHANNELS,
        "parameters": PARAMETERS,
        "biology": asdict(preset.biology),
        "layout": asdict(preset.layout),
        "nuisance": asdict(preset.nuisance),
        "batch_gain": {b: v.tolist() for b, v in nuisance["gain"].items()},
        "batch_offset": {b: v.tolist() for b, v in nuisance["offset"].items()},
    }
    (gt / "config.json").write_text(json.dumps(config, indent=2, default=float))
