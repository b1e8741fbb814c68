"""`clef demo`: the built-in world end to end — stage 1, CLEF vs the image-only baseline, a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from clef.commands.argtypes import int_at_least, writable_dir
from clef.commands.cpu import apply_threads


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole method on the built-in world: report with figures (≤ 10 min on 2 CPU cores)",
        description="Render the built-in world, pre-train (stage 1, PA+PI), fine-tune CLEF (names + "
        "descriptions) and the image-only baseline I for AU detection and FER, evaluate them and write "
        "OUT/report.md with PNG figures (per-AU F1, confusion matrices, CLEF vs I, t-SNE of the "
        "embeddings). Synthetic numbers, never real-data results.",
    )
    parser.add_argument(
        "--out", type=writable_dir, default=Path("clef-demo"), help="output folder (default clef-demo)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a much smaller run (seconds to a minute; for tests)"
    )
    parser.add_argument(
        "--threads",
        type=int_at_least(0),
        default=0,
        help="torch CPU threads (default 0: auto, the cores the load average leaves free)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clef.experiments.demo import DEMO_PRESETS, run_demo

    threads = apply_threads(args.threads)
    print(f"using {threads} CPU thread(s)")
    cfg = DEMO_PRESETS["quick" if args.quick else "default"]
    result = run_demo(cfg, args.out, progress=not args.quiet)
    h = result.headline()
    print(f"report: {Path(args.out) / 'report.md'}  ({result.seconds['total'] / 60:.1f} min)")
    print(
        f"AU mean F1 (lab world, fold 1):  CLEF {100 * h['au_mean_f1_clef']:.1f}   "
        f"I {100 * h['au_mean_f1_i']:.1f}"
    )
    print(
        f"FER accuracy (wild world):       CLEF {100 * h['fer_accuracy_clef']:.1f}   "
        f"I {100 * h['fer_accuracy_i']:.1f}"
    )
    print("(synthetic world: not real-data results)")
    return 0
