"""`clef reproduce`: the paper's ablation and zero-shot tables on the built-in world."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from clef.commands.argtypes import int_at_least, writable_dir
from clef.commands.cpu import apply_threads
from clef.errors import UserError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="run the paper's ablation and zero-shot tables on the built-in world",
        description="Render the built-in world, run stage 1 (PI, PA+PI) and every ablation row (base = no "
        "stage 1, and CLEF) for AU (lab world) and FER (wild world), and both zero-shot protocols; write "
        "OUT/report.md (the paper's table layout, mean ± std over seeds), OUT/*.png and OUT/results.json. "
        "Synthetic numbers, never real-data results.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="small world, few steps, 1 seed (default; ≤ 10 min)"
    )
    size.add_argument(
        "--full", action="store_true", help="bigger world, more steps, 3 seeds (its runtime is in the report)"
    )
    size.add_argument("--micro", action="store_true", help=argparse.SUPPRESS)  # tests: wiring only
    parser.add_argument("--seeds", help="comma-separated seeds (default: 0 quick, 0,1,2 full)")
    parser.add_argument("--out", type=writable_dir, required=True, help="output folder")
    parser.add_argument(
        "--threads",
        type=int_at_least(0),
        default=0,
        help="torch CPU threads (default 0: auto, the cores the load average leaves free)",
    )
    parser.add_argument(
        "--jobs", type=int_at_least(1), default=1, help="run the seeds in this many processes (1 thread each)"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="run nothing: merge these runs' results.json (same preset, other seeds) into OUT/report.md",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clef.experiments.reproduce import PRESETS, load_results, merge_results, reproduce, write_report
    from clef.experiments.world import world_baselines

    if args.merge:
        merged = merge_results([load_results(d) for d in args.merge])
        if not merged.baselines and (args.merge[0] / "world").is_dir():  # results of older versions
            merged.baselines = world_baselines(merged.config.au_fold, args.merge[0] / "world")
        print(f"report: {write_report(merged, args.out)} (seeds {', '.join(map(str, merged.config.seeds))})")
        return 0

    mode = "full" if args.full else "micro" if args.micro else "quick"
    cfg = PRESETS[mode]
    if args.seeds:
        try:
            seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
        except ValueError as err:
            raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2") from err
        cfg = dataclasses.replace(cfg, seeds=seeds)
    threads = apply_threads(args.threads)
    print(f"using {threads} CPU thread(s)")
    out = Path(args.out)
    result = reproduce(cfg, out, progress=not args.quiet, jobs=args.jobs, threads_per_job=1)
    report = write_report(result, out)
    print(f"report: {report}  ({result.seconds['total'] / 60:.1f} min)")
    for key, tasks in result.ablation.items():
        au, fer = tasks.get("au", []), tasks.get("fer", [])
        print(
            f"  {key:20s} AU F1 {100 * sum(au) / max(len(au), 1):5.1f}   "
            f"FER acc {100 * sum(fer) / max(len(fer), 1):5.1f}"
        )
    return 0
