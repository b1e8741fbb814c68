"""``clef probe CKPT --dataset bp4d --root DIR [--fold 1] [--out DIR]``: linear probes of frozen features.

Fits scikit-learn logistic regressions on the frozen image embedding of a checkpoint (or of a randomly
initialised model, ``--random-init BACKBONE`` or ``CKPT=random``) on the fold's training subjects and
scores held-out subjects: mean AU F1, expression accuracy, subject-ID accuracy (:mod:`clef.probe`).
Prints one summary line; with ``--out`` also writes ``OUT/probe.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clef.commands.argtypes import int_at_least, writable_dir


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "probe",
        help="linear probes (AU F1, expression, subject ID) of a model's frozen image features",
        description="Linear probes of frozen image features: per-AU and expression logistic regressions "
        "fitted on the fold's training subjects and scored on its test subjects, and a subject-ID "
        "probe within the test subjects (fitted on half of each subject's videos, scored on the other "
        "half). Features: the L2-normalised image embedding (encode_image).",
    )
    parser.add_argument(
        "checkpoint",
        nargs="?",
        help="a checkpoint (OUT/stage1 or its .safetensors/.json), or 'random' with --random-init",
    )
    parser.add_argument("--dataset", default="bp4d", help="dataset name (clef list datasets; default bp4d)")
    parser.add_argument("--root", required=True, help="the dataset folder")
    parser.add_argument("--fold", type=int_at_least(1), default=1, help="fold whose test subjects are scored")
    parser.add_argument("--out", type=writable_dir, help="write OUT/probe.json")
    parser.add_argument(
        "--random-init",
        metavar="BACKBONE",
        help="probe a randomly initialised model of this backbone instead of a checkpoint",
    )
    parser.add_argument(
        "--backbone-config",
        metavar="YAML",
        default="{}",
        help="with --random-init: backbone overrides, e.g. '{image_encoder: cnn, image_size: 32}'",
    )
    parser.add_argument("--seed", type=int, default=0, help="random-init and solver seed (default 0)")
    parser.add_argument(
        "--frame-stride", type=int_at_least(1), default=1, help="use every n-th frame of each video"
    )
    parser.add_argument("--batch-size", type=int_at_least(1), default=256)
    parser.add_argument("--workers", type=int_at_least(0), default=0, help="image decode processes")
    parser.add_argument("--C", type=float, default=1.0, dest="C", help="inverse L2 strength of every LR")
    parser.add_argument(
        "--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:N"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def load_probed_model(checkpoint: str | None, random_init: str | None, backbone_config: str, seed: int):
    """The model to probe: a checkpoint, or a fresh one of ``random_init`` seeded with ``seed``."""
    import torch
    import yaml

    from clef.errors import UserError

    if random_init is None:
        if checkpoint in (None, "random"):
            raise UserError("give a checkpoint, or --random-init BACKBONE to probe a random model")
        from clef.checkpoint import load_checkpoint

        model, _ = load_checkpoint(checkpoint)
        return model, str(checkpoint)
    if checkpoint not in (None, "random"):
        raise UserError("give either a checkpoint or --random-init, not both")
    try:
        overrides = yaml.safe_load(backbone_config) or {}
    except yaml.YAMLError as err:
        raise UserError(f"--backbone-config: not YAML: {err}") from None
    if not isinstance(overrides, dict):
        raise UserError(
            "--backbone-config must be a mapping, e.g. '{image_encoder: cnn, cnn_widths: [16, 32]}'"
        )
    from clef.model import build_model

    torch.manual_seed(seed)
    # pretrained=False: a random image tower; the text tower is not used by the probe.
    model = build_model(random_init, overrides, pretrained=False)
    return model, f"random:{random_init}"


def run(args: argparse.Namespace) -> int:
    import json

    from clef.probe import ProbeConfig, probe_model
    from clef.run_config import resolve_device

    model, source = load_probed_model(args.checkpoint, args.random_init, args.backbone_config, args.seed)
    cfg = ProbeConfig(
        dataset=args.dataset,
        root=str(args.root),
        fold=args.fold,
        frame_stride=args.frame_stride,
        batch_size=args.batch_size,
        workers=args.workers,
        C=args.C,
        device=str(resolve_device(args.device)),
        progress=not args.quiet,
    )
    result = probe_model(model, cfg, seed=args.seed)
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": source,
            "dataset": args.dataset,
            "root": str(args.root),
            "fold": args.fold,
            "seed": args.seed,
            "frame_stride": args.frame_stride,
            "C": args.C,
            **result.to_dict(),
        }
        (out / "probe.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"probe {source} fold {args.fold}: {result.summary()}")
    return 0
