"""``clef data check DATASET ROOT``: validate a dataset root and summarise it before training.

Loads the root with the dataset's loader (errors name the file and line), then prints counts per
split / fold / subject / activity, AU base rates among coded frames and uncoded counts, the class
histogram, and opens every image with Pillow. Exit status: 0 when everything loaded and every image
opened (or, with ``--on-error skip``, when the bad items were skipped and counted); 1 when images are
unreadable or subjects leak across folds/splits; 2 when the layout is broken.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from clef.errors import UserError

MAX_LISTED = 20


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="inspect and validate datasets", description="Inspect and validate datasets."
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check",
        help="validate a dataset root and print a summary",
        description=(
            "Validate a dataset root and print counts per split/fold/subject/activity, AU base rates, "
            "the class histogram and unreadable images. Datasets: affectnet7, affectnet8, bp4d, "
            "bp4dplus, csv, disfa, ferplus, rafdb (see docs/data.md)."
        ),
    )
    check.add_argument("dataset", help="dataset name, e.g. bp4d, disfa, ferplus, csv")
    check.add_argument("root", type=Path, help="dataset root folder (for csv: the CSV file)")
    check.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="raise: stop at the first bad row or image (default); skip: drop and count them",
    )
    check.add_argument("--no-verify-images", action="store_true", help="do not open every image with Pillow")
    check.add_argument(
        "--decode-images",
        action="store_true",
        help="also fully decode every image (much slower; the default check already finds unreadable "
        "files and JPEGs cut short)",
    )
    check.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "loader option, repeatable: first_frame=1 (disfa); folds=FILE, seed=N, n_parts=N, "
            "save_folds=PATH, uncoded_tasks=true (bp4dplus); pixels_csv=FILE, cache_dir=DIR (ferplus)"
        ),
    )
    check.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    check.set_defaults(func=run_check)


def parse_options(items: list[str]) -> dict[str, object]:
    """``["first_frame=1", "folds=f.yaml"]`` -> ``{"first_frame": 1, "folds": "f.yaml"}``.

    Numbers and booleans are read as YAML scalars; anything else stays the literal string.
    """
    options: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        options[key.strip()] = parsed if isinstance(parsed, int | float | bool) else value
    return options


def run_check(args: argparse.Namespace) -> int:
    import pandas as pd

    from clef.data import summary
    from clef.data.registry import load_dataset

    options = parse_options(args.option)
    records = load_dataset(args.dataset, args.root, on_error=args.on_error, **options)
    attrs = dict(records.attrs)

    def show(title: str, table) -> None:
        if table is not None:
            print(f"\n== {title}")
            with pd.option_context("display.max_rows", 500, "display.width", 120):
                print(table.to_string())

    print(f"dataset {args.dataset} at {args.root}: {len(records)} images")
    n_subjects, n_activities = records["subject"].nunique(), records["activity"].nunique()
    print(f"subjects: {n_subjects}  activities: {n_activities}")
    if attrs.get("classes"):
        print(f"class order: {', '.join(attrs['classes'])}")
    protocol = attrs.get("protocol")
    if protocol is not None:
        where = f", file {attrs['protocol_file']}" if attrs.get("protocol_file") else ""
        print(f"protocol: {protocol.name} ({len(protocol.parts)} subject-exclusive parts{where})")
    for reason, count in (attrs.get("dropped") or {}).items():
        print(f"dropped by the dataset's protocol: {count} {reason}")

    show("images per split", summary.counts_by(records, "split"))
    show("images per part (fold column)", summary.counts_by(records, "fold"))
    show("folds (train / test)", summary.fold_table(records, protocol))
    show("images per subject", summary.counts_by(records, "subject"))
    show("images per activity", summary.counts_by(records, "activity"))
    show("AU occurrence (base rate among coded frames)", summary.au_table(records))
    show("expressions", summary.expression_table(records, attrs.get("classes")))

    status = 0
    skipped = list(attrs.get("skipped") or [])
    leaks = summary.subject_leaks(records)
    if leaks:
        print(f"\n== subject leaks: {len(leaks)}")
        for leak in leaks[:MAX_LISTED]:
            print(f"  {leak}")
        status = 1
    if args.no_verify_images:
        print("\nimages: not verified (--no-verify-images)")
    else:
        bad = summary.verify_images(records["path"], decode=args.decode_images, progress=not args.no_progress)
        print(f"\nimages: {len(records) - len(bad)} of {len(records)} open and verify")
        if bad and args.on_error == "raise":
            print(f"\n== unreadable images: {len(bad)}")
            for path, reason in bad[:MAX_LISTED]:
                print(f"  {path}: {reason}")
            status = 1
        skipped += [f"{path}: unreadable image ({reason})" for path, reason in bad if args.on_error == "skip"]
    if skipped:
        print(f"\n== skipped (--on-error skip): {len(skipped)}")
        for message in skipped[:MAX_LISTED]:
            print(f"  {message}")
        if len(skipped) > MAX_LISTED:
            print(f"  ... and {len(skipped) - MAX_LISTED} more")
    if status:
        print("clef: data check failed (see above)", file=sys.stderr)
    return status
