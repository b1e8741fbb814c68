"""`clef finetune`: stage 2, text-driven fine-tuning for AU detection or FER (docs/method.md §4).

Multi-GPU / multi-node: ``torchrun --nproc-per-node N -m clef finetune ...`` (every process runs the
same command; rank 0 writes the files and scores the test selection).

A RUN_DIR that already holds a run is refused unless ``--resume`` (continue it, same config) or
``--overwrite`` (start over: that run's files are removed, nothing else); see docs/errors.md.
"""

from __future__ import annotations

import argparse

from clef.commands.training import add_run_arguments, run_folder_checked


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="stage 2: fine-tune for AU detection or FER from a stage-1 checkpoint, a backbone or scratch",
        description="Fine-tune as the config says, write RUN_DIR/model.{safetensors,json} (labels in "
        "output order, thresholds, config, metrics) and, unless evaluate=false, the test metrics in "
        "RUN_DIR/eval. Config keys: see docs/stage2.md; configs/finetune/ and configs/paper/ hold examples.",
    )
    add_run_arguments(parser, "data.fold=2 engine.steps=500")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clef.config import load_config
    from clef.distributed import is_main_process, shutdown
    from clef.finetune import FINETUNE_OUTPUTS, FinetuneConfig, finetune

    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    resume = run_folder_checked(args, cfg, FINETUNE_OUTPUTS)
    try:
        result = finetune(cfg, progress=not args.quiet, resume=resume, overwrite=args.overwrite)
        main = is_main_process()
    finally:
        shutdown()
    if not main:  # under torchrun, rank 0 reports
        return 0
    print(
        f"trained on {result.n_train} records in {result.train_seconds:.0f} s; checkpoint {result.checkpoint}"
    )
    if result.result is not None:
        print(
            f"test ({result.n_test} records): {_headline(result.result)}; files in {result.run_dir / 'eval'}"
        )
    return 0


def _headline(result) -> str:
    from clef.evaluation import AUResult

    if isinstance(result, AUResult):
        return f"mean AU F1 {100 * result.mean_f1:.1f}"
    return (
        f"accuracy {100 * result.accuracy:.2f}, mean class accuracy {100 * result.mean_class_accuracy:.2f}, "
        f"macro-F1 {100 * result.macro_f1:.2f}"
    )
