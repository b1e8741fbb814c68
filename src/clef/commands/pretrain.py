"""``clef pretrain --config FILE [key=value ...]``: stage-1 pre-training (docs/method.md §3).

The config is :class:`clef.pretrain.PretrainConfig`; the YAML file and the ``key=value`` arguments hold
only overrides (``clef pretrain --config configs/pretrain/synth.yaml engine.steps=50 run_dir=runs/x``).
A RUN_DIR that already holds a run is refused unless ``--resume`` (continue it, same config) or
``--overwrite`` (start over); see docs/errors.md for what an interrupted run leaves.
Multi-GPU / multi-node: ``torchrun --nproc-per-node N -m clef pretrain ...`` (every process runs the
same command; rank 0 writes the files).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="stage 1: activity-supervised contrastive pre-training",
        description="Stage 1 of CLEF: image-image (same activity = positive) and image-activity-text "
        "contrastive pre-training. Writes RUN_DIR/stage1.safetensors + .json, RUN_DIR/config.yaml, "
        "RUN_DIR/metrics.jsonl and RUN_DIR/checkpoint.pt (resumable).",
    )
    parser.add_argument("--config", type=Path, help="YAML file of overrides of the defaults")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="further overrides, e.g. engine.steps=100 data.root=DIR",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="CHECKPOINT",
        help="continue an interrupted run exactly, with its config (default: RUN_DIR/checkpoint.pt)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a RUN_DIR that already holds a run (removes that run's files, nothing else)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from clef.config import config_to_dict, load_config
    from clef.distributed import shutdown
    from clef.engine import CHECKPOINT_NAME, NonFiniteLossError
    from clef.errors import UserError
    from clef.pretrain import STAGE1_OUTPUTS, PretrainConfig, pretrain
    from clef.run_config import fill_fold
    from clef.run_folder import check_run_folder

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    resume = None
    if args.resume is not None:
        run_dir = Path(fill_fold(cfg.run_dir, cfg.data.fold, "run_dir"))
        resume = run_dir / CHECKPOINT_NAME if args.resume == "auto" else Path(args.resume)
        if not resume.is_file():
            raise UserError(f"--resume: {resume} does not exist")
    # Checked before the data and the model are loaded; the engine checks the checkpoint itself.
    check_run_folder(
        fill_fold(cfg.run_dir, cfg.data.fold, "run_dir"),
        resume=resume is not None,
        overwrite=args.overwrite,
        outputs=STAGE1_OUTPUTS,
    )
    try:
        result = pretrain(cfg, resume=resume, overwrite=args.overwrite)
    except NonFiniteLossError as err:
        raise UserError(str(err)) from None
    finally:
        shutdown()
    if result.checkpoint is not None:
        print(
            f"pre-trained {result.steps} steps on {result.frames} frames of "
            f"{len(result.activities)} activities; final loss {result.final_loss:.4f}; "
            f"model: {result.checkpoint}"
        )
    return 0
