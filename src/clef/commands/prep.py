"""`clef prep`: turn images, frame trees and videos into aligned face crops plus a manifest."""

from __future__ import annotations

import argparse

import torch

from clef.commands.argtypes import float_in, int_at_least, writable_dir
from clef.errors import UserError
from clef.prep.align import TEMPLATES, AlignRecipe
from clef.prep.mtcnn import DetectorConfig, find_weights
from clef.prep.pipeline import FORMATS, ON_ERROR_CHOICES, PrepConfig, run_prep


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prep",
        help="detect, align and crop faces from images, frame trees or videos",
        description=(
            "Detect faces and 5 landmarks with MTCNN, similarity-align them to a 5-point template "
            "and save square crops that mirror the input tree, with manifest.csv (box, landmarks, "
            "score, track id per crop), misses.csv (frames without a face) and prep_recipe.json. "
            "Re-running into the same --out skips files already finished."
        ),
    )
    p.add_argument("input", help="an image, a video, or a folder searched recursively for both")
    p.add_argument("--out", required=True, type=writable_dir, help="output folder")
    p.add_argument("--size", type=int_at_least(16), default=224, help="crop side in pixels (default 224)")
    p.add_argument(
        "--margin",
        type=float_in(0.0, 2.0),
        default=AlignRecipe.margin,
        help="context around the template square, per side, as a fraction of it "
        f"(default {AlignRecipe.margin})",
    )
    p.add_argument("--template", choices=sorted(TEMPLATES), default=AlignRecipe.template)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--batch-size", type=int_at_least(1), default=16, help="frames per detector batch")
    p.add_argument(
        "--all-faces",
        action="store_true",
        help="keep every face (videos: with a stable track id) instead of the largest per frame",
    )
    p.add_argument("--frame-step", type=int_at_least(1), default=1, help="use every n-th video frame")
    p.add_argument(
        "--min-face-size",
        type=float_in(8.0, 10000.0),
        default=DetectorConfig.min_face_size,
        help="smallest face side searched, in pixels (default 20)",
    )
    p.add_argument("--format", choices=FORMATS, default="jpg", help="crop file format (default jpg)")
    p.add_argument(
        "--on-error",
        choices=ON_ERROR_CHOICES,
        default="raise",
        help="unreadable image or video: stop with an error (raise), or count it and go on (skip)",
    )
    p.add_argument(
        "--weights", default=None, help="folder with the MTCNN .pt state dicts (default: installed)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {text!r}; valid: cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {text!r} requested but CUDA is not available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {text!r} requested but MPS is not available; use --device cpu")
    return device


def run(args: argparse.Namespace) -> int:
    config = PrepConfig(
        recipe=AlignRecipe(size=args.size, margin=args.margin, template=args.template),
        detector=DetectorConfig(min_face_size=args.min_face_size),
        batch_size=args.batch_size,
        all_faces=args.all_faces,
        frame_step=args.frame_step,
        on_error=args.on_error,
        image_format=args.format,
    )
    summary = run_prep(
        args.input,
        args.out,
        config,
        device=_device(args.device),
        weights=find_weights(args.weights) if args.weights else None,
        progress=not args.quiet,
    )
    print(
        f"prep: {summary.items_processed} files processed, {summary.items_already_done} already done, "
        f"{summary.frames} frames, {summary.faces} crops, {summary.misses} frames without a face "
        f"({summary.frames_per_second:.1f} frames/s) -> {args.out}"
    )
    if summary.skipped:
        print(f"prep: skipped {len(summary.skipped)} unreadable files (listed in {args.out}/skipped.csv):")
        for source, error in summary.skipped[:10]:
            print(f"  {source}: {error}")
        if len(summary.skipped) > 10:
            print(f"  ... and {len(summary.skipped) - 10} more")
    return 0
