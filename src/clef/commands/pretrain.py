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

from clef.commands.training import add_run_arguments, run_folder_checked


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="stage 1: activity-supervised contrastive pre-training",
        description="Stage 1 of CLEF: image-image (same activity = positive) and image-activity-text "
        "contrastive pre-training. Writes RUN_DIR/stage1.safetensors + .json, RUN_DIR/config.yaml, "
        "RUN_DIR/metrics.jsonl and RUN_DIR/checkpoint.pt (resumable).",
    )
    add_run_arguments(parser, "engine.steps=100 data.root=DIR")
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from clef.config import config_to_dict, load_config
    from clef.distributed import shutdown
    from clef.pretrain import STAGE1_OUTPUTS, PretrainConfig, pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    resume = run_folder_checked(args, cfg, STAGE1_OUTPUTS)
    try:
        result = pretrain(cfg, resume=resume, overwrite=args.overwrite)
    finally:
        shutdown()
    if result.checkpoint is not None:
        print(
            f"pre-trained {result.steps} steps on {result.frames} frames of "
            f"{len(result.activities)} activities; final loss {result.final_loss:.4f}; "
            f"model: {result.checkpoint}"
        )
    return 0
