"""`clef predict`: run a fine-tuned model on images, folders, frame trees and videos; rows to CSV/Parquet."""

from __future__ import annotations

import argparse
from pathlib import Path

from clef.commands.argtypes import float_in, int_at_least, writable_file
from clef.prep.align import TEMPLATES, AlignRecipe
from clef.prep.mtcnn import DetectorConfig


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="a fine-tuned model's AU / expression scores per face and frame of images and videos",
        description=(
            "Detect and align faces (clef prep's MTCNN pipeline, or --aligned crops), score each with "
            "the model's trained labels and any --labels texts (zero-shot), and write one row per face "
            "per frame to OUT (.csv, or .parquet with pyarrow) as they are produced, with OUT's .json "
            "sidecar (columns, labels, thresholds, model, preprocessing, skipped inputs); docs/predict.md."
        ),
    )
    p.add_argument("model", help="a fine-tuned model: RUN_DIR/model (NAME, NAME.json or NAME.safetensors)")
    p.add_argument("inputs", nargs="+", help="images, videos, or folders searched recursively for both")
    p.add_argument("--out", required=True, type=writable_file, help="output file: .csv or .parquet")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--resume", action="store_true", help="continue OUT: skip what it already holds")
    state.add_argument("--overwrite", action="store_true", help="replace OUT")
    faces = p.add_argument_group("faces")
    faces.add_argument("--aligned", action="store_true", help="inputs are aligned face crops: no detection")
    faces.add_argument("--all-faces", action="store_true", help="every face (default: the largest per frame)")
    faces.add_argument("--size", type=int_at_least(16), default=AlignRecipe.size, help="aligned crop side")
    faces.add_argument("--margin", type=float_in(0.0, 2.0), default=AlignRecipe.margin)
    faces.add_argument("--template", choices=sorted(TEMPLATES), default=AlignRecipe.template)
    faces.add_argument(
        "--min-face-size", type=float_in(8.0, 10000.0), default=DetectorConfig.min_face_size, help="pixels"
    )
    faces.add_argument("--weights", default=None, help="folder with the MTCNN .pt state dicts")
    video = p.add_argument_group("videos")
    video.add_argument("--frame-step", type=int_at_least(1), default=1, help="score every n-th frame")
    video.add_argument("--start", type=float_in(0.0, 1e9), default=0.0, help="first second to read")
    video.add_argument("--end", type=float_in(0.0, 1e9), default=None, help="last second to read")
    labels = p.add_argument_group("open-vocabulary labels")
    labels.add_argument("--labels", nargs="+", default=[], metavar="TEXT", help="texts to score zero-shot")
    labels.add_argument("--label-file", type=Path, help="labels and groups, one per line (docs/predict.md)")
    labels.add_argument(
        "--only-labels", action="store_true", help="write these labels without the trained ones"
    )
    labels.add_argument(
        "--templates",
        choices=("model", "none"),
        default="model",
        help="model: put each text into the model's name templates (default); none: embed it as written",
    )
    run = p.add_argument_group("running")
    run.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    run.add_argument("--batch-size", type=int_at_least(1), default=64, help="frames per batch")
    run.add_argument("--workers", type=int_at_least(0), default=1, help="decoding processes (0: none)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from clef.open_vocab import OpenLabel, read_label_file
    from clef.predict import PredictConfig, Predictor
    from clef.prep.mtcnn import find_weights

    config = PredictConfig(
        batch_size=args.batch_size,
        workers=args.workers,
        aligned=args.aligned,
        all_faces=args.all_faces,
        frame_step=args.frame_step,
        start=args.start,
        end=args.end,
        recipe=AlignRecipe(size=args.size, margin=args.margin, template=args.template),
        detector=DetectorConfig(min_face_size=args.min_face_size),
        templates=args.templates,
        only_labels=args.only_labels,
    )
    labels = [OpenLabel(text) for text in args.labels]
    if args.label_file is not None:
        labels += read_label_file(args.label_file)
    weights = find_weights(args.weights) if args.weights else None
    predictor = Predictor(args.model, config, labels, args.device, weights, progress=not args.quiet)
    summary = predictor.run(args.inputs, args.out, resume=args.resume, overwrite=args.overwrite)
    resumed = f", {summary.resumed_sources} sources already in the file" if summary.resumed_sources else ""
    print(
        f"predict: {summary.files} files, {summary.frames} frames, {summary.rows} rows, "
        f"{summary.frames_without_face} frames without a face, {summary.failed_files} unreadable files"
        f"{resumed} ({summary.frames_per_second:.1f} frames/s) -> {summary.output} (+ {summary.sidecar.name})"
    )
    failures = [s for s in summary.skipped if s["reason"] != "no face found"]
    for entry in failures[:10]:
        print(f"  skipped {entry['source']}: {entry['reason']}")
    if len(failures) > 10:
        print(f"  ... and {len(failures) - 10} more (listed in {summary.sidecar})")
    return 0
