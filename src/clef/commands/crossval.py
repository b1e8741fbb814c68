"""`clef crossval`: stage 2 on every fold of a subject-exclusive protocol; per-fold and mean ± std."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path


def _folds(text: str) -> tuple[int, ...]:
    try:
        folds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fold numbers, got {text!r}") from None
    if not folds or min(folds) < 1:
        raise argparse.ArgumentTypeError(f"expected fold numbers >= 1, got {text!r}")
    return folds


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "crossval",
        help="fine-tune and evaluate on each fold of a k-fold protocol (BP4D, DISFA, BP4D+)",
        description="Runs clef finetune once per fold (RUN_DIR/fold<k>), each trained on that fold's "
        "training subjects only, and writes RUN_DIR/crossval.{json,md}. For stage 1 per fold, put "
        "{fold} in init.checkpoint (e.g. init.checkpoint=runs/pretrain/fold{fold}/stage1).",
    )
    parser.add_argument("--config", type=Path, help="a clef finetune config (YAML of overrides)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. engine.steps=500")
    parser.add_argument(
        "--stage1-config",
        type=Path,
        help="a clef pretrain config: run stage 1 on each fold's training subjects first (its data.root "
        "defaults to this run's data.root)",
    )
    parser.add_argument(
        "--stage1",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the stage-1 config (repeatable), e.g. --stage1 engine.steps=200",
    )
    parser.add_argument("--folds", type=_folds, default=(1, 2, 3), help="folds to run (default 1,2,3)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clef.config import load_config
    from clef.crossval import cross_validate, stage1_per_fold, write_crossval
    from clef.errors import UserError
    from clef.finetune import FinetuneConfig

    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    pretrain = None
    if args.stage1_config is not None or args.stage1:
        from clef.pretrain import PretrainConfig

        if cfg.init.checkpoint:
            raise UserError("give either --stage1-config (stage 1 per fold) or init.checkpoint, not both")
        stage1_cfg = load_config(PretrainConfig, args.stage1_config, args.stage1)
        if args.quiet:
            stage1_cfg = replace(stage1_cfg, engine=replace(stage1_cfg.engine, progress=False))
        pretrain = stage1_per_fold(stage1_cfg, cfg.data.dataset, cfg.data.root)
    result = cross_validate(cfg, folds=args.folds, pretrain=pretrain, progress=not args.quiet)
    paths = write_crossval(
        result, cfg.run_dir, title=f"{cfg.data.dataset} {cfg.method.task} cross-validation"
    )
    summary = result.summary()
    if result.task == "au":
        m = summary["mean_f1"]
        print(f"mean AU F1 over folds {args.folds}: {100 * m['mean']:.1f} ± {100 * m['std']:.1f}")
    else:
        m = summary["accuracy"]
        print(f"accuracy over folds {args.folds}: {100 * m['mean']:.2f} ± {100 * m['std']:.2f}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
