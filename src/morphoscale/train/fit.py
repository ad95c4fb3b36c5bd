"""`morphoscale train`: a validated config, a store, an output folder; Lightning does the loop."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import __version__
from ..compute import Precision, resolve_precision, wants_gpu
from ..config import parse_model, read_yaml
from ..data.split import Split
from ..errors import ConfigError, InputError, OutputExistsError, why
from ..io import TRAINING_RUN, check_replaceable, file_sha256, mark_output, os_error_message, refuse_overlap


class TrainConfig(BaseModel):
    """Keys of a training config (YAML)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = "mae_vit_tiny_patch8_64"
    model_overrides: dict = Field(default_factory=dict)
    channels: list[str] | None = None  # a subset / order of the store's channels
    crop_size: int | None = None  # default: the preset's image size
    batch_size: int = Field(32, ge=1)
    max_steps: int = Field(1000, ge=1)
    max_time_seconds: float | None = Field(None, gt=0)  # stop after this much training wall time (an equal-time budget)
    optimizer: Literal["adamw", "lion"] = "adamw"
    lr: float = Field(1.5e-4, ge=0)  # 0: a control run, weights as initialized
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = 1.0
    augment: Literal["none", "random"] = "none"
    crop: Literal["one", "multi"] = "one"  # one crop per site, or global + local views (multi-crop)
    views: int = Field(1, ge=1)  # crop: one -> augmented views of that crop (BYOL needs 2)
    n_global: int = Field(2, ge=1)  # crop: multi
    n_local: int = Field(4, ge=0)
    local_size: int | None = None  # default: half the crop size
    # fraction of every site's width, on the right, never cropped in training: a spatial
    # hold-out, for reconstructions of unseen crops of a screen with few fields
    holdout_width: float = Field(0.0, ge=0, lt=1)
    # part of the screen (perturbations or wells) never trained on, so maps can be scored on it
    split: Split = Split()
    probe_every: int | None = Field(None, ge=1)  # probe the model at step 0 and every N steps (train/probes.py)
    probe_sites: int = Field(192, ge=8)  # the fixed subset of sites the probes embed
    probe_truth: Path | None = None  # a simulated screen's ground_truth/ folder: adds the decoding R2 probe
    probe_label: str | None = None  # a site-table column: adds a kNN probe of it (across wells)
    random_init: bool = False  # write the untrained model (the floor every trained model must clear)
    # start from these weights: a morphoscale checkpoint of the same model (fine-tuning, continued pre-training)
    weights: Path | None = None
    checkpoint_every: int = Field(200, ge=1)
    preview_every: int = Field(200, ge=1)
    log_every: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0)
    seed: int = 0
    precision: Precision | None = None  # default: bf16-mixed on GPU, 32 on CPU (compute.py); weights stay fp32
    compile: bool = False  # torch.compile the training step (eager, with a warning line, where compiling fails)
    loader_prefetch: int = Field(4, ge=1)  # batches each DataLoader worker keeps ready
    # standardize + augment on the CPU or on the device (auto: the device when it is a GPU)
    transforms_on: Literal["auto", "cpu", "device"] = "auto"
    deterministic: bool = True
    devices: int | str = "auto"  # per node; batch_size is the global batch, split over devices x nodes
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"  # auto, or ddp for data parallelism over devices and nodes (torchrun and SLURM work)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = "auto"

    @field_validator("devices")
    @classmethod
    def _devices(cls, v):
        """A count per node (or -1, every device), or auto; Lightning's own check comes after
        the run folder exists, as a traceback."""
        if isinstance(v, str) and v.lstrip("-").isdigit():
            v = int(v)
        if v == "auto" or (isinstance(v, int) and (v >= 1 or v == -1)):
            return v
        raise ValueError("need a count of devices (1 or more, -1 for all) or auto")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v):
        from lightning.pytorch.strategies import StrategyRegistry

        if v != "auto" and v not in StrategyRegistry.available_strategies():
            raise ValueError("not a Lightning strategy; auto, ddp, ddp_spawn, fsdp, ...")
        return v

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_name(cls, v):
        return str(v) if isinstance(v, int) else v  # `precision: 32` in YAML is a number


def load_train_config(path: Path | None, overrides: dict | None = None) -> TrainConfig:
    data = read_yaml(path) if path else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse_model(TrainConfig, data, str(path) if path else "command line")


def train(
    cfg: TrainConfig,
    store: Path,
    out: Path,
    resume: bool = False,
    resume_from: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Train `cfg.model` on the store into `out` (model.ckpt, checkpoints/, logs, previews).

    Under DDP the launcher (Lightning's, torchrun or SLURM) starts this function once per
    process; only global rank 0 prepares the folder and writes files. The output folder is
    made (an old one removed with --overwrite) once the config and the store have been
    checked: a config error leaves nothing behind."""
    from ..data.store import ImageStore
    from ..determinism import thread_invariant

    _quiet_lightning()
    out = Path(out)
    zero = is_global_zero()
    on_gpu = wants_gpu(cfg.accelerator)
    precision = resolve_precision(cfg.precision, on_gpu, "key 'precision'")
    if isinstance(cfg.devices, int) and cfg.batch_size % (cfg.devices * cfg.num_nodes):
        raise ConfigError(
            f"key 'batch_size': the global batch of {cfg.batch_size} does not split over {cfg.devices * cfg.num_nodes} processes"
        )
    refuse_overlap(out, Path(store), cfg.weights, cfg.probe_truth)
    ckpt_path = _resume_from(out, resume, resume_from, overwrite, zero)
    st = ImageStore(store)
    _refuse_damage(st)
    channels, crop = _check_against_store(cfg, st, store)
    multicrop = _multicrop(cfg, crop)
    module, sites, classes = _training_module(cfg, st, store, channels, multicrop)
    data = _datamodule(cfg, st, store, crop, channels, multicrop, sites, module.model, on_gpu)
    if cfg.compile:
        module.compile_step(warn=lambda msg: _stderr().print(msg, markup=False, highlight=False))
    if ckpt_path is not None:
        _check_checkpoint_fits(Path(ckpt_path), module)
    if zero and ckpt_path is None and overwrite and out.exists():
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only or full disk: one line, before anything is written
        raise InputError(os_error_message(out, e)) from None
    if zero:
        mark_output(out, TRAINING_RUN)
        _write_config(cfg, out, store, st, channels, crop, classes, sites, multicrop, on_gpu)
    if cfg.random_init:
        from .checkpoint import save_untrained

        return save_untrained(module, out) if zero else out / "model.ckpt"
    trainer = _trainer(cfg, out, st, crop, channels, precision, on_gpu, progress)
    with thread_invariant(module, on_gpu), _interrupts_as_such():
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    final = out / "model.ckpt"
    tmp = out / ".model.ckpt.tmp"
    trainer.save_checkpoint(tmp)  # every rank calls it; rank 0 writes
    if trainer.is_global_zero:
        os.replace(tmp, final)
    return final


def _stderr():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _refuse_damage(st) -> None:
    """Training samples sites at random: a damaged chunk would stop it hours in, or never be
    read at all. Every chunk's size and header are checked first (16 bytes a site)."""
    damaged = st.damaged_sites()
    if damaged:
        more = f" and {len(damaged) - 1} more" if len(damaged) > 1 else ""
        raise InputError(f"{st.path}: {next(iter(damaged.values()))}{more}; the store is damaged (ingest it again)")


def _resume_from(out: Path, resume: bool, resume_from: Path | None, overwrite: bool, zero: bool) -> str | None:
    """The checkpoint a resumed run starts from; None for a fresh run (an existing output
    is refused unless overwriting)."""
    last = out / "checkpoints" / "last.ckpt"
    if resume_from:
        if not Path(resume_from).is_file():
            raise InputError(f"--resume-from {resume_from}: checkpoint not found")
        return str(resume_from)
    if resume:
        if not last.exists():
            raise InputError(f"{out}: nothing to resume (no checkpoints/last.ckpt)")
        return str(last)
    if zero and out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise OutputExistsError(f"{out}: output exists; pass --resume to continue it or --overwrite to start over")
        check_replaceable(out, TRAINING_RUN)
    return None


def _check_checkpoint_fits(path: Path, module) -> None:
    """A checkpoint to resume from holds this model's weights: every parameter, of its shape
    (one of another model failed deep inside Lightning, after the output was touched)."""
    import torch

    try:  # memory-mapped: the shapes are read, not the weights (Lightning reads those next)
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["state_dict"]
    except Exception as e:
        raise InputError(f"{path}: not a morphoscale checkpoint ({why(e, 120)})") from None
    own = module.state_dict()
    for name, p in own.items():
        if name not in state or tuple(state[name].shape) != tuple(p.shape):
            got = "missing" if name not in state else f"of shape {tuple(state[name].shape)}"
            raise InputError(
                f"{path}: a checkpoint of another model ({name} is {got}; this model's is {tuple(p.shape)})"
            )
    extra = [k for k in state if k not in own]
    if extra:
        raise InputError(f"{path}: a checkpoint of another model ({extra[0]} is not a parameter of this one)")


def _check_against_store(cfg: TrainConfig, st, store: Path) -> tuple[list[str], int]:
    """(channels, crop size): every key that names something of the store checked against it."""
    from ..models.registry import PRESETS, preset_info

    channels = cfg.channels or st.channels
    st.channel_indices(channels)  # unknown names fail here, naming the store
    if cfg.probe_label is not None and cfg.probe_label not in st.sites.columns:
        raise ConfigError(f"key 'probe_label': '{cfg.probe_label}' is not a column of {store}'s site table")
    if cfg.probe_truth is not None and not Path(cfg.probe_truth).is_dir():
        raise ConfigError(
            f"key 'probe_truth': {cfg.probe_truth} is not a folder (give a simulated screen's ground_truth/)"
        )
    if cfg.model not in PRESETS:
        raise ConfigError(f"key 'model': unknown preset '{cfg.model}'")
    crop = cfg.crop_size or preset_info(cfg.model).input_size
    h, w = st.image_size
    if crop > min(h, w):
        raise ConfigError(f"key 'crop_size': {crop} does not fit the store's {h}x{w} images")
    if crop > round(w * (1 - cfg.holdout_width)):
        raise ConfigError(
            f"key 'holdout_width': {cfg.holdout_width} leaves {round(w * (1 - cfg.holdout_width))} px of width, less than a {crop} px crop"
        )
    return channels, crop


def _multicrop(cfg: TrainConfig, crop: int):
    if cfg.crop != "multi":
        return None
    from ..data.transforms import MultiCrop

    local = cfg.local_size or crop // 2
    if not 0 < local <= crop:
        raise ConfigError(f"key 'local_size': {local} must be between 1 and the crop size {crop}")
    return MultiCrop(crop, cfg.n_global, local, cfg.n_local)


def _training_module(cfg: TrainConfig, st, store: Path, channels: list[str], multicrop):
    """(the LightningModule, the training sites, the perturbation names its labels index);
    the model is initialized right after the seed, as every earlier run was."""
    import lightning as L

    from ..data.datasets import column_codes
    from ..data.split import training_sites
    from .module import TrainingModule

    codes, classes = column_codes(st, "perturbation")  # the dataset's label codes index these names
    sites = training_sites(st.sites, cfg.split)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    n_global = cfg.n_global if multicrop else cfg.views
    module = TrainingModule(
        cfg.model,
        channels,
        cfg.model_overrides,
        cfg.optimizer,
        cfg.lr,
        cfg.weight_decay,
        cfg.betas,
        cfg.warmup_steps,
        cfg.max_steps,
        cfg.min_lr_ratio,
        cfg.seed,
        classes,
        n_global,
    )
    model = module.model
    if cfg.weights is not None:
        from ..models.weights import initialize_from

        initialize_from(model, Path(cfg.weights))
    model.class_prior = class_prior(codes, len(classes), sites)
    if model.multi_view and not (multicrop or cfg.views >= 2):
        raise ConfigError(
            f"key 'views': {cfg.model} learns from two views of a site; set views: 2 (crop: one) or crop: multi"
        )
    if getattr(model.cfg, "adabn", False) and cfg.batch_size > 1 and st.sites["batch"].nunique() < 2:
        raise ConfigError(f"key 'model.adabn': {store} has one experimental batch; per-batch statistics need several")
    return module, sites, classes


def _datamodule(
    cfg: TrainConfig, st, store: Path, crop: int, channels: list[str], multicrop, sites, model, on_gpu: bool
):
    from .data import StoreDataModule

    one_view = multicrop is None and cfg.views == 1
    if cfg.transforms_on == "device" and not one_view:
        raise ConfigError("key 'transforms_on': transforms on the device need one view per site (crop: one, views: 1)")
    device_transforms = one_view and (cfg.transforms_on == "device" or (cfg.transforms_on == "auto" and on_gpu))
    by_batch = bool(getattr(model.cfg, "adabn", False))  # AdaBN: each step's crops from one experimental batch
    return StoreDataModule(
        str(store),
        crop,
        cfg.batch_size,
        cfg.max_steps,
        channels,
        cfg.augment,
        cfg.num_workers,
        cfg.seed,
        multicrop=multicrop,
        n_views=1 if multicrop else cfg.views,
        group_by_batch=by_batch and cfg.batch_size > 1,
        holdout_width=cfg.holdout_width,
        sites=sites,
        device_transforms=device_transforms,
        prefetch=cfg.loader_prefetch,
    )


def _write_config(
    cfg: TrainConfig, out: Path, store: Path, st, channels, crop, classes, sites, multicrop, on_gpu: bool
) -> None:
    """config.json: what was trained, on what, and how (read back by embed and the report)."""
    from ..determinism import record

    trained = (
        {"random_init": True, "model": cfg.model, "model_overrides": cfg.model_overrides, "seed": cfg.seed}
        if cfg.random_init
        else cfg.model_dump()
    )
    (out / "config.json").write_text(
        json.dumps(
            {
                "train": trained,
                "store": str(store),
                "channels": channels,
                "crop_size": crop,
                "initial_weights_sha256": file_sha256(Path(cfg.weights)) if cfg.weights else None,
                "classes": len(classes),
                "training_sites": len(st) if sites is None else len(sites),
                "images_per_step": cfg.batch_size * (len(multicrop.sizes()) if multicrop else cfg.views),
                "morphoscale_version": __version__,
                "determinism": record(deterministic=cfg.deterministic and not on_gpu),
            },
            indent=2,
            default=str,
        )
    )


def _trainer(
    cfg: TrainConfig, out: Path, st, crop: int, channels: list[str], precision: str, on_gpu: bool, progress: bool
):
    """Lightning's Trainer with our loggers and callbacks (checkpoints, previews, the NaN guard,
    resources, the learning check, probes)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from .accounting import ResourceAccounting
    from .callbacks import (
        LearningCheck,
        NonFiniteLossGuard,
        ReconstructionPreviews,
        ResumeDataStream,
        step_progress_bar,
    )

    loggers = [CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="tensorboard", version="")]
    callbacks = [
        ResumeDataStream(),
        ModelCheckpoint(
            dirpath=out / "checkpoints",
            filename="step{step:07d}",
            every_n_train_steps=cfg.checkpoint_every,
            save_top_k=-1,
            save_last=True,
            auto_insert_metric_name=False,
        ),
        ReconstructionPreviews(out / "previews", cfg.preview_every),
        NonFiniteLossGuard(),
        ResourceAccounting(out),
        LearningCheck(out, console=_stderr()),
    ]
    if progress:
        callbacks.append(step_progress_bar())
    if cfg.probe_every:
        from .probes import Probes, ProbeSet

        callbacks.append(
            Probes(
                ProbeSet(st, crop, channels, cfg.probe_sites, cfg.seed, cfg.probe_truth, cfg.probe_label),
                cfg.probe_every,
            )
        )
    return L.Trainer(
        max_steps=cfg.max_steps,
        max_time={"seconds": cfg.max_time_seconds} if cfg.max_time_seconds else None,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=precision,
        gradient_clip_val=cfg.grad_clip,
        log_every_n_steps=cfg.log_every,
        logger=loggers,
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic=cfg.deterministic and not on_gpu,
        default_root_dir=out,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
    )


def class_prior(codes: np.ndarray, n_classes: int, sites: np.ndarray | None):
    """Class frequencies over the training sites: the classifier's trivial prediction."""
    import torch

    used = codes if sites is None else codes[sites]
    return torch.tensor(np.bincount(used, minlength=n_classes) / max(len(used), 1), dtype=torch.float32)


def is_global_zero() -> bool:
    """Whether this process is global rank 0 as the launchers set it (Lightning's, torchrun,
    SLURM); a process started alone is."""
    env = os.environ
    for var in ("RANK", "SLURM_PROCID"):
        if env.get(var):
            return int(env[var]) == 0
    return int(env.get("LOCAL_RANK", 0)) == 0 and int(env.get("NODE_RANK", env.get("GROUP_RANK", 0))) == 0


@contextlib.contextmanager
def _interrupts_as_such():
    """Lightning ends a fit that Ctrl-C or SIGTERM interrupted with sys.exit(1) (the checkpoints
    stay); turned back into the interrupt, the CLI says so in one line with 130 or 143."""
    try:
        yield
    except SystemExit as e:
        if isinstance(e.__context__, KeyboardInterrupt) or type(e).__name__ == "SIGTERMException":
            raise KeyboardInterrupt from None
        raise


def _quiet_lightning() -> None:
    """Hide Lightning's advertising tips and warnings that do not apply to this data path."""
    import logging
    import warnings

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").setLevel(logging.WARNING)
    # "Received SIGTERM": the CLI says it in its own line
    logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").setLevel(logging.WARNING)
    # our sampler continues the stream from the restored step (on_train_start), so mid-epoch resume is exact
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
