"""Stage 1 as a program: weakly-supervised contrastive pre-training (docs/method.md §3).

:func:`pretrain` assembles the parts from one :class:`PretrainConfig` — records
(:mod:`clef.data`), the activity-balanced sampler, the decoding Dataset, the starting model
(:mod:`clef.run_config`), the activity texts (:mod:`clef.prompts`), the stage-1 step
(:mod:`clef.stage1`) — and hands them to the engine (:func:`clef.engine.train`). It writes, in
``cfg.run_dir``:
``config.yaml`` (the merged config), ``metrics.jsonl``, ``checkpoint.pt`` (resumable training state)
and ``stage1.safetensors`` + ``stage1.json`` (the model, loadable with
:func:`clef.checkpoint.load_checkpoint`, the starting point of stage 2 and of linear probes).

``clef pretrain --config FILE [key=value ...]`` is the command line for it; under
``torchrun --nproc-per-node N`` every process runs it and ranks share the work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from clef.augment import AugmentConfig, BatchAugment
from clef.config import config_to_dict, require_number
from clef.engine import EngineConfig, seed_everything, train
from clef.errors import UserError
from clef.run_config import (
    InitConfig,
    OptimConfig,
    TrainableConfig,
    apply_trainable,
    build_initial_model,
    fill_fold,
    param_groups,
    resolve_device,
)
from clef.stage1 import SpreadMonitor, Stage1LossConfig, Stage1Step

__all__ = ["PretrainData", "PretrainConfig", "PretrainResult", "pretrain", "select_records", "STAGE1_OUTPUTS"]


@dataclass(frozen=True)
class PretrainData:
    """Which frames stage 1 sees and how batches are drawn."""

    dataset: str = "bp4d"  # a name of clef.data.DATASETS
    root: str = ""  # the dataset folder (required)
    options: dict[str, Any] = field(default_factory=dict)  # loader options, e.g. {uncoded_tasks: true}
    # Pre-train only on the training subjects of this fold (docs/method.md §3: no transductive
    # leakage); null = every subject with an activity (e.g. lab data used for a wild FER target).
    fold: int | None = None
    activities_per_batch: int = 0  # K; 0 = every activity in every batch
    frames_per_activity: int = 8  # M
    frame_stride: int = 4
    workers: int = 2  # DataLoader decode processes

    RESUME_MAY_DIFFER: ClassVar[frozenset[str]] = frozenset({"workers"})  # decoding only

    def __post_init__(self) -> None:
        require_number("activities_per_batch", self.activities_per_batch, integer=True, at_least=0)
        require_number("frames_per_activity", self.frames_per_activity, integer=True, at_least=1)
        require_number("frame_stride", self.frame_stride, integer=True, at_least=1)
        require_number("workers", self.workers, integer=True, at_least=0)


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a stage-1 run needs; YAML files hold only overrides of these defaults.

    The keys shared with stage 2 (``run_dir``, ``device``, ``seed``, ``prompt_set``, ``init``,
    ``trainable``, ``optim``, ``engine``, ``augment``) mean the same in both (:mod:`clef.run_config`).
    ``prompt_set`` supplies the activity texts; ``none`` uses the activity ids as the texts.
    """

    run_dir: str = "runs/pretrain"
    seed: int = 0
    device: str = "auto"  # auto = cuda when available, else cpu
    prompt_set: str = "synth"
    init: InitConfig = field(default_factory=InitConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    data: PretrainData = field(default_factory=PretrainData)
    loss: Stage1LossConfig = field(default_factory=Stage1LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    engine: EngineConfig = field(
        default_factory=lambda: EngineConfig(steps=500, warmup_steps=50, log_every=10)
    )

    # May change on resume: the run folder may have been moved, the run continued on another device.
    RESUME_MAY_DIFFER: ClassVar[frozenset[str]] = frozenset({"run_dir", "device"})


@dataclass(frozen=True)
class PretrainResult:
    checkpoint: Path | None  # stage1 model checkpoint (rank 0), None on other ranks
    steps: int
    final_loss: float
    activities: tuple[str, ...]
    frames: int  # records pre-trained on


def select_records(cfg: PretrainData):
    """Load the dataset and keep the frames stage 1 may use: with an activity, outside the test fold."""
    from clef.data import load_dataset
    from clef.data.folds import split_fold

    if not cfg.root:
        raise UserError("data.root is required: the folder of the dataset to pre-train on")
    records = load_dataset(cfg.dataset, cfg.root, **cfg.options)
    if cfg.fold is not None:
        records, _ = split_fold(records, cfg.fold)
    records = records[records["activity"].notna()].reset_index(drop=True)
    if records.empty:
        raise UserError(f"{cfg.root}: no frame with an activity label; stage 1 needs activities")
    return records


def _spread_batch(dataset, records, per_activity: int = 8) -> torch.Tensor:
    """uint8 (N, 3, S, S): the fixed frames whose embedding spread the run logs (SpreadMonitor),
    ``per_activity`` frames of each activity spread evenly over its records, in table order."""
    rows = []
    for _, group in records.groupby("activity", sort=True):
        positions = records.index.get_indexer(group.index)
        take = min(per_activity, len(positions))
        rows += [int(positions[round(k * (len(positions) - 1) / max(take - 1, 1))]) for k in range(take)]
    return torch.stack([dataset.load_image(i) for i in rows])


STAGE1_OUTPUTS = ("stage1.safetensors", "stage1.json")  # written in run_dir besides the engine's files


def pretrain(cfg: PretrainConfig, resume: str | Path | None = None, overwrite: bool = True) -> PretrainResult:
    """Run stage 1 as configured (see the module docstring for the files written).

    Args:
        cfg: the merged configuration.
        resume: a ``checkpoint.pt`` of an interrupted run with the same config, to continue exactly.
        overwrite: when ``run_dir`` already holds a run (and no ``resume``): True removes its files
            and starts over, False refuses (:mod:`clef.run_folder`; ``clef pretrain`` passes False
            unless ``--overwrite``).

    Raises:
        UserError: bad data, prompts, backbone or settings; a run folder holding a run without
            ``resume`` nor ``overwrite``; a bad or foreign ``resume`` checkpoint.
        clef.engine.NonFiniteLossError: the loss diverged.
    """
    from clef.checkpoint import save_checkpoint
    from clef.data.dataset import ImageRecords
    from clef.data.sampler import ActivityBalancedBatchSampler
    from clef.distributed import init_from_env
    from clef.prompts import load_prompt_set
    from clef.run_folder import check_run_folder

    run_dir = Path(fill_fold(cfg.run_dir, cfg.data.fold, "run_dir"))
    # Before any data is read or model built: a refusal should come at once.
    overwrite = overwrite and resume is None  # a resumed run keeps its folder
    check_run_folder(run_dir, resume=resume is not None, overwrite=overwrite, outputs=STAGE1_OUTPUTS)
    ctx = init_from_env(resolve_device(cfg.device))  # under torchrun with CUDA: this process's GPU
    device = ctx.device

    records = select_records(cfg.data)
    activities = tuple(sorted(records["activity"].unique(), key=str))
    if cfg.prompt_set == "none":
        prompt_set, texts = None, list(activities)
    else:
        prompt_set = load_prompt_set(cfg.prompt_set, activities=activities)
        texts = prompt_set.activity_texts(activities)

    seed_everything(cfg.seed, ctx.rank)
    model, init = build_initial_model(cfg.init, cfg.data.fold)
    apply_trainable(model, cfg.trainable)
    if not cfg.loss.image_text:
        # Without L_IA the text tower and the logit scale get no gradient: freeze them, so that DDP
        # does not wait for their gradients and AdamW's weight decay does not move them.
        model.lock_text_tower(0)
        model.logit_scale.requires_grad_(False)
    model.to(device)
    size = model.preprocess.image_size

    k = cfg.data.activities_per_batch or len(activities)
    sampler = ActivityBalancedBatchSampler.from_records(
        records,
        activities_per_batch=k,
        frames_per_activity=cfg.data.frames_per_activity,
        frame_stride=cfg.data.frame_stride,
        seed=cfg.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    dataset = ImageRecords(records, image_size=size, expressions=None, activities=activities)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.data.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.workers > 0,
    )

    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + ctx.rank)
    augment = BatchAugment(dataclasses.replace(cfg.augment, size=size))
    step = Stage1Step(
        cfg.loss,
        augment,
        generator,
        activity_texts=texts if cfg.loss.image_text else None,
        preprocess=model.preprocess.normalize,
    )
    monitor = SpreadMonitor(_spread_batch(dataset, records), model.preprocess.normalize)
    result = train(
        model,
        step,
        param_groups(model, cfg.optim),
        loader,
        cfg.engine,
        run_dir,
        device=device,
        generators={"augment": generator},
        run_config=cfg,
        resume=resume,
        overwrite=overwrite,
        outputs=STAGE1_OUTPUTS,
        monitor=monitor,
    )

    checkpoint = None
    if ctx.is_main:
        weights, _ = save_checkpoint(
            run_dir / "stage1",
            model,
            prompt_set=None if prompt_set is None else cfg.prompt_set,
            labels=list(activities),
            task="pretrain",
            training_config=config_to_dict(cfg),
            metrics={"final_loss": result.loss, "steps": result.step},
            notes={
                "activity_texts": dict(zip(activities, texts, strict=True)),
                "frames": len(records),
                "init": init,
            },
        )
        checkpoint = weights
    return PretrainResult(checkpoint, result.step, result.loss, activities, len(records))
