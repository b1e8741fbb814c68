"""Stage 2 as a program: text-driven fine-tuning for AU detection or FER (docs/method.md §4).

:func:`finetune` assembles the parts from one :class:`FinetuneConfig` — records and their split
(:mod:`clef.data`), the label space (:mod:`clef.label_space`), the starting model
(:mod:`clef.run_config`), the fine-tuned model (:mod:`clef.finetuned`), the step (:mod:`clef.stage2`)
— hands them to the engine (:func:`clef.engine.train`), then scores the test selection
(:mod:`clef.inference`, :mod:`clef.evaluation`). It writes, in ``run_dir``: ``config.yaml``,
``metrics.jsonl``, ``checkpoint.pt`` (resumable), ``model.safetensors`` + ``model.json`` (the
fine-tuned model with its label space, thresholds, config and test metrics) and ``eval/``.

``clef finetune --config FILE [key=value ...]`` is the command line for it; under
``torchrun --nproc-per-node N`` every process runs it, ranks share the batches and rank 0 writes the
files and scores the test selection.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from clef.augment import AugmentConfig, BatchAugment
from clef.checkpoint import finished_with
from clef.config import require_number
from clef.data.folds import split_fold
from clef.data.records import au_targets, record_aus
from clef.engine import EngineConfig, seed_everything, train
from clef.errors import UserError
from clef.evaluation import AUResult, FERResult, evaluate_predictions, result_from_dict, write_result
from clef.finetuned import FineTuneModel, save_finetuned
from clef.label_space import LabelSpace, label_space
from clef.labels import BP4D_AUS, DISFA_AUS, EXPRESSIONS
from clef.model import ClefModel
from clef.prompts import load_prompt_set
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
from clef.stage2 import MethodConfig, Stage2Step, au_pos_weights

__all__ = [
    "FINETUNE_OUTPUTS",
    "DataConfig",
    "FinetuneConfig",
    "LIGHT_AUGMENT",
    "BENCHMARK_AUS",
    "FinetuneResult",
    "build_finetune_model",
    "split_records",
    "resolve_labels",
    "finished_run",
    "finetune",
]

# The benchmark AUs of the datasets that define them (docs/datasets.md); other datasets use every AU
# column.
BENCHMARK_AUS: dict[str, tuple[int, ...]] = {"bp4d": BP4D_AUS, "bp4dplus": BP4D_AUS, "disfa": DISFA_AUS}

# Stage 2 sees aligned faces and labels that depend on small facial details: crops stay large, no
# grayscale or blur (a blurred 64 px face loses AU cues), mild colour jitter. ``size`` is replaced by
# the model's input size when the run is built.
LIGHT_AUGMENT = AugmentConfig(
    crop_scale=(0.8, 1.0),
    crop_ratio=(0.9, 1.1),
    flip_p=0.5,
    jitter_p=0.5,
    brightness=0.2,
    contrast=0.2,
    saturation=0.2,
    hue=0.02,
    grayscale_p=0.0,
    blur_p=0.0,
)


@dataclass(frozen=True)
class DataConfig:
    """Which records train and test.

    ``fold`` set: the dataset's subject-exclusive protocol (trains on the other parts' subjects);
    ``fold`` null: the ``split`` column (``train_split`` / ``test_split``, e.g. RAF-DB's official one).
    ``aus`` empty: the dataset's benchmark AUs (BP4D 12, DISFA 8), else every AU column present.
    ``classes`` empty: the dataset's own class order (``records.attrs["classes"]``), else the canonical
    expressions present. ``train_limit``: keep a seeded random subset of that many training records.
    """

    dataset: str = "bp4d"
    root: str = "clef-world/bp4d"
    fold: int | None = 1
    train_split: str = "train"
    test_split: str = "test"
    aus: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()
    train_limit: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    workers: int = 0

    RESUME_MAY_DIFFER: ClassVar[frozenset[str]] = frozenset({"workers", "eval_batch_size"})

    def __post_init__(self) -> None:
        require_number("batch_size", self.batch_size, integer=True, at_least=1)
        require_number("eval_batch_size", self.eval_batch_size, integer=True, at_least=1)
        require_number("workers", self.workers, integer=True, at_least=0)
        if self.train_limit is not None:
            require_number("train_limit", self.train_limit, integer=True, at_least=1)
        if self.fold is not None:
            require_number("fold", self.fold, integer=True, at_least=1)


@dataclass(frozen=True)
class FinetuneConfig:
    """A whole fine-tuning run; YAML files hold only the keys that differ from these defaults.

    The keys shared with stage 1 (``run_dir``, ``device``, ``seed``, ``prompt_set``, ``init``,
    ``trainable``, ``optim``, ``engine``, ``augment``) mean the same in both (:mod:`clef.run_config`).
    """

    seed: int = 0
    device: str = "auto"
    run_dir: str = "runs/finetune"
    prompt_set: str = "labels"  # label names, descriptions and templates
    evaluate: bool = True  # score the test selection at the end (threshold 0.5, never tuned)
    init: InitConfig = InitConfig()
    trainable: TrainableConfig = TrainableConfig()
    data: DataConfig = DataConfig()
    method: MethodConfig = MethodConfig()
    optim: OptimConfig = OptimConfig()
    engine: EngineConfig = EngineConfig(steps=300, warmup_steps=30, checkpoint_every=100, log_every=10)
    augment: AugmentConfig = LIGHT_AUGMENT

    # May change on resume: the folder may have been moved, the run continued on another device.
    RESUME_MAY_DIFFER: ClassVar[frozenset[str]] = frozenset({"run_dir", "device", "evaluate"})


# What stage 2 writes in run_dir besides the engine's files (clef.run_folder.RUN_FILES).
FINETUNE_OUTPUTS = ("model.safetensors", "model.json", "eval")


@dataclass
class FinetuneResult:
    """What :func:`finetune` produced."""

    run_dir: Path
    checkpoint: Path  # NAME (the .safetensors / .json pair)
    result: AUResult | FERResult | None  # test metrics (None when evaluate=false, no test records, rank > 0)
    n_train: int
    n_test: int
    train_seconds: float
    init: dict[str, Any]


def build_finetune_model(
    clef: ClefModel,
    space: LabelSpace,
    method: MethodConfig,
    prompt_set: str = "labels",
    trainable: TrainableConfig | None = None,
) -> FineTuneModel:
    """Wrap ``clef`` for ``method`` with ``prompt_set``'s templates, locking applied.

    ``trainable`` sets how much of each tower trains. The "I" baseline uses no text: its text tower
    and logit scale are frozen whatever ``trainable`` says (so no optimiser state and no DDP
    unused-parameter trouble).
    """
    method.validate()
    if method.task != space.task:
        raise UserError(f"method.task={method.task!r} but the label space is for {space.task!r}")
    prompts = load_prompt_set(prompt_set)
    model = FineTuneModel(
        clef,
        space,
        head=method.head,
        name_templates=prompts.name_templates,
        description_templates=prompts.description_templates,
        au_prompt=method.au_prompt,
        negative_templates=method.negative_templates,
    )
    apply_trainable(clef, trainable or TrainableConfig())
    if method.head == "linear":
        clef.lock_text_tower(0)
        clef.logit_scale.requires_grad_(False)
    return model


def split_records(records: pd.DataFrame, data: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) records: the fold's subject-exclusive split, or the ``split`` column."""
    if data.fold is not None:
        return split_fold(records, data.fold, records.attrs.get("protocol"))
    if "split" not in records or records["split"].isna().all():
        raise UserError(
            f"dataset {data.dataset!r} has no official split; set data.fold to a fold of its protocol"
        )
    train_part = records[records["split"] == data.train_split]
    test_part = records[records["split"] == data.test_split]
    if train_part.empty:
        splits = sorted(records["split"].dropna().unique())
        raise UserError(f"no record has split {data.train_split!r}; the dataset's splits: {splits}")
    return train_part, test_part


def resolve_labels(records: pd.DataFrame, data: DataConfig, task: str) -> tuple:
    """AU numbers (task "au") or class names (task "fer") the run uses, in output order."""
    if task == "au":
        present = record_aus(records)
        aus = tuple(data.aus) or tuple(a for a in BENCHMARK_AUS.get(data.dataset, present) if a in present)
        missing = [a for a in aus if a not in present]
        if missing or not aus:
            raise UserError(
                f"dataset {data.dataset!r} has no labels for AU {missing or '(none)'}; "
                f"it codes: {', '.join(map(str, present)) or 'none'}"
            )
        return aus
    if data.classes:
        return tuple(data.classes)
    own = records.attrs.get("classes")
    if own:
        return tuple(own)
    present = set(records["expression"].dropna())
    classes = tuple(e for e in EXPRESSIONS if e in present)
    if not classes:
        raise UserError(f"dataset {data.dataset!r} has no expression labels")
    return classes


def _with_label(records: pd.DataFrame, space: LabelSpace) -> pd.DataFrame:
    """The records a one-of-C space can train on or be scored on: those showing one of its classes."""
    if space.multi_label:
        return records
    return records[records["expression"].isin(list(space.ids)).fillna(False).astype(bool)]


def _dataset(records: pd.DataFrame, space: LabelSpace, image_size: int):
    from clef.data.dataset import ImageRecords

    if space.is_au:
        return ImageRecords(records, image_size, aus=space.aus, expressions=None)
    return ImageRecords(records, image_size, expressions=space.ids)


def finished_run(cfg: FinetuneConfig) -> FinetuneResult | None:
    """The result of a run that already finished in ``cfg.run_dir`` with exactly this config, else None.

    A run counts as finished when ``run_dir/model.{safetensors,json}`` exist and the sidecar's recorded
    ``training_config`` equals ``cfg`` (after a JSON round trip); its test metrics come from the sidecar.
    """
    run_dir = Path(fill_fold(cfg.run_dir, cfg.data.fold, "run_dir"))
    meta = finished_with(run_dir / "model", cfg)
    if meta is None:
        return None
    metrics, notes = meta.get("metrics"), meta.get("notes") or {}
    result = result_from_dict(metrics, cfg.method.task == "au") if metrics else None
    return FinetuneResult(
        run_dir,
        run_dir / "model",
        result,
        int(notes.get("n_train", 0)),
        int(notes.get("n_test", 0)),
        float(notes.get("train_seconds", 0.0)),
        notes.get("init", {}),
    )


def finetune(
    cfg: FinetuneConfig,
    records: pd.DataFrame | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
    train_records: pd.DataFrame | None = None,
    test_records: pd.DataFrame | None = None,
    reuse: bool = False,
    overwrite: bool = True,
) -> FinetuneResult:
    """Run stage 2 as ``cfg`` says and write ``run_dir/model.{safetensors,json}`` (+ ``eval/``).

    Args:
        cfg: the run.
        records: the dataset's record table (loaded from ``cfg.data`` when None).
        progress: progress bars.
        resume: an engine checkpoint (``run_dir/checkpoint.pt``) to continue from.
        train_records / test_records: explicit selections (e.g. a zero-shot protocol's seen classes);
            when given they replace the split of ``records``.
        reuse: return :func:`finished_run`'s result, without training, when ``run_dir`` holds a finished
            run of exactly this config (re-running an interrupted batch of runs redoes only what is
            missing).
        overwrite: when ``run_dir`` already holds a run (and no ``resume``): True removes its files
            and starts over, False refuses (``clef finetune`` passes False unless ``--overwrite``).

    Returns:
        :class:`FinetuneResult`.
    """
    from clef.data.sampler import RandomBatchSampler
    from clef.distributed import barrier, init_from_env
    from clef.inference import predict
    from clef.run_folder import check_run_folder

    if reuse and resume is None and (done := finished_run(cfg)) is not None:
        return done
    run_dir = Path(fill_fold(cfg.run_dir, cfg.data.fold, "run_dir"))
    overwrite = overwrite and resume is None  # a resumed run keeps its folder
    check_run_folder(run_dir, resume=resume is not None, overwrite=overwrite, outputs=FINETUNE_OUTPUTS)
    ctx = init_from_env(resolve_device(cfg.device))  # under torchrun with CUDA: this process's GPU
    seed_everything(cfg.seed, ctx.rank)
    if train_records is None:
        if records is None:
            from clef.data import load_dataset

            records = load_dataset(cfg.data.dataset, cfg.data.root)
        train_records, test_records = split_records(records, cfg.data)
    method = cfg.method
    labels = resolve_labels(records if records is not None else train_records, cfg.data, method.task)
    space = label_space(
        method.task,
        load_prompt_set(cfg.prompt_set),
        aus=labels if method.task == "au" else (),
        classes=labels if method.task == "fer" else (),
    )
    train_records = _with_label(train_records, space)
    if cfg.data.train_limit is not None and len(train_records) > cfg.data.train_limit:
        train_records = train_records.sample(n=cfg.data.train_limit, random_state=cfg.seed)
    if train_records.empty:
        raise UserError("no training records left after the split and label selection")

    clef, init = build_initial_model(cfg.init, cfg.data.fold)
    model = build_finetune_model(clef, space, method, cfg.prompt_set, cfg.trainable).to(ctx.device)
    generator = torch.Generator().manual_seed(cfg.seed + 1_000_003 * ctx.rank)
    augment = None
    if method.augment:
        augment = BatchAugment(dataclasses.replace(cfg.augment, size=clef.preprocess.image_size))
    pos_weight = None
    if space.is_au and method.au_pos_weight == "balanced":
        pos_weight = au_pos_weights(*au_targets(train_records, space.aus), cap=method.au_pos_weight_max)
    step = Stage2Step(method, augment, generator, pos_weight)

    dataset = _dataset(train_records.reset_index(drop=True), space, clef.preprocess.image_size)
    sampler = RandomBatchSampler(
        len(dataset), cfg.data.batch_size, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.data.workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=cfg.data.workers > 0,
    )
    engine = dataclasses.replace(cfg.engine, progress=cfg.engine.progress and progress)
    start = time.perf_counter()
    train(
        model,
        step,
        param_groups(model.clef, cfg.optim, model.head),
        loader,
        engine,
        run_dir,
        device=ctx.device,
        generators={"stage2": generator},
        run_config=cfg,
        resume=resume,
        overwrite=overwrite,
        outputs=FINETUNE_OUTPUTS,
    )
    seconds = time.perf_counter() - start

    checkpoint = run_dir / "model"
    result, n_test = None, 0 if test_records is None else len(test_records)
    if ctx.is_main:
        if cfg.evaluate and n_test:
            test_records = _with_label(test_records, space)
            n_test = len(test_records)
            predictions = predict(
                model, test_records, cfg.data.eval_batch_size, ctx.device, cfg.data.workers, progress
            )
            result = evaluate_predictions(predictions, test_records)
            write_result(result, run_dir / "eval", title=f"{cfg.data.dataset} test")
        save_finetuned(
            checkpoint,
            model,
            prompt_set=cfg.prompt_set,
            training_config=cfg,
            metrics=None if result is None else result.to_dict(),
            notes={"init": init, "n_train": len(train_records), "n_test": n_test, "train_seconds": seconds},
        )
    barrier()  # other ranks return once rank 0 has written the model
    return FinetuneResult(run_dir, checkpoint, result, len(train_records), n_test, seconds, init)
