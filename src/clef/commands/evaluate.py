"""`clef evaluate`: score a fine-tuned checkpoint on a dataset's test selection and write the metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from clef.commands.argtypes import int_at_least, writable_dir


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="per-AU F1 or FER accuracy / mean class accuracy / macro-F1 of a fine-tuned checkpoint",
        description="AU: per-AU F1 at threshold 0.5 (uncoded frames excluded) and their mean. FER: "
        "accuracy, mean class accuracy, macro-F1, confusion matrix. Writes JSON, CSV, markdown and a plot.",
    )
    parser.add_argument("checkpoint", help="NAME, NAME.safetensors or NAME.json written by clef finetune")
    parser.add_argument("--dataset", required=True, help="dataset loader name (bp4d, disfa, rafdb, ...)")
    parser.add_argument("--root", required=True, type=Path, help="dataset root folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--split", help="official split to score (default: test)")
    which.add_argument("--fold", type=int_at_least(1), help="score the test subjects of this protocol fold")
    parser.add_argument("--out", required=True, type=writable_dir, help="folder for the result files")
    parser.add_argument("--batch-size", type=int_at_least(1), default=256)
    parser.add_argument("--workers", type=int_at_least(0), default=0, help="image-decoding processes")
    parser.add_argument(
        "--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:N"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clef.data import load_dataset
    from clef.data.folds import test_selection
    from clef.errors import UserError
    from clef.evaluation import AUResult, evaluate_predictions, write_result
    from clef.finetuned import load_finetuned
    from clef.inference import predict
    from clef.run_config import resolve_device

    device = resolve_device(args.device)
    model, meta = load_finetuned(args.checkpoint, device=device)
    records = load_dataset(args.dataset, args.root)
    try:
        selected, where = test_selection(records, args.fold, args.split)
    except UserError as err:
        raise UserError(f"dataset {args.dataset!r} at {args.root}: {err}") from None
    predictions = predict(model, selected, args.batch_size, device, args.workers, not args.quiet)
    result = evaluate_predictions(predictions, selected)
    paths = write_result(result, args.out, title=f"{args.dataset} {where}")
    if isinstance(result, AUResult):
        print(f"{len(selected)} records ({where}): mean AU F1 {100 * result.mean_f1:.1f}")
    else:
        print(
            f"{len(selected)} records ({where}): accuracy {100 * result.accuracy:.2f}, mean class accuracy "
            f"{100 * result.mean_class_accuracy:.2f}, macro-F1 {100 * result.macro_f1:.2f}"
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
