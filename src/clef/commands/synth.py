"""`clef synth`: render the built-in synthetic world in the real datasets' layouts, and its gallery."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from clef.commands.argtypes import float_in, int_at_least, writable_dir, writable_file
from clef.errors import UserError
from clef.synth.export import DOMAIN_FOLDERS, DOMAINS, write_world
from clef.synth.gallery import write_gallery
from clef.synth.world import DISFA_SUBJECT_IDS, LAB_SUBJECT_IDS, WorldConfig


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="render the built-in synthetic world (BP4D, DISFA and RAF-DB layouts)",
        description="Render the built-in synthetic face world into OUT/bp4d (lab videos, BP4D layout), "
        "OUT/disfa (DISFA layout) and OUT/rafdb (wild stills, RAF-DB layout), plus OUT/gallery.png.",
    )
    parser.add_argument(
        "--out", type=writable_dir, help="output folder (required unless a subcommand is given)"
    )
    parser.add_argument(
        "--domains",
        default=",".join(DOMAINS),
        help=f"comma-separated domains to render, from {', '.join(DOMAINS)} (default: all)",
    )
    _add_world_options(parser)
    parser.add_argument(
        "--subjects", type=int_at_least(1), default=41, help="lab subjects (1-41, default 41)"
    )
    parser.add_argument(
        "--frames", type=int_at_least(1), default=120, help="frames per lab video (default 120)"
    )
    parser.add_argument(
        "--disfa-subjects", type=int_at_least(1), default=27, help="DISFA-like subjects (1-27, default 27)"
    )
    parser.add_argument("--disfa-frames", type=int_at_least(1), default=400, help="frames per DISFA video")
    parser.add_argument(
        "--wild-images", type=int_at_least(1), default=4000, help="wild stills (default 4000)"
    )
    parser.add_argument("--label-noise", type=float_in(0.0, 1.0), default=0.05, help="wild label-noise rate")
    parser.add_argument("--workers", type=int_at_least(1), default=2, help="rendering processes (default 2)")
    parser.add_argument("--no-gallery", action="store_true", help="do not write OUT/gallery.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)

    sub = parser.add_subparsers(dest="synth_command", metavar="SUBCOMMAND")
    gallery = sub.add_parser("gallery", help="write a PNG contact sheet of the world")
    gallery.add_argument("--out", type=writable_file, required=True, help="PNG file to write")
    _add_world_options(gallery)
    gallery.set_defaults(func=run_gallery)


def _add_world_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int_at_least(16), default=64, help="image size in pixels (default 64)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="world seed (default 0)")


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        raise UserError("clef synth needs --out FOLDER")
    domains = tuple(d.strip() for d in args.domains.split(",") if d.strip())
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown or not domains:
        raise UserError(f"unknown domain {', '.join(unknown) or '(none)'}; valid: {', '.join(DOMAINS)}")
    if args.subjects > len(LAB_SUBJECT_IDS):
        raise UserError(
            f"--subjects is at most {len(LAB_SUBJECT_IDS)} (the BP4D subject ids), got {args.subjects}"
        )
    if args.disfa_subjects > len(DISFA_SUBJECT_IDS):
        raise UserError(f"--disfa-subjects is at most {len(DISFA_SUBJECT_IDS)}, got {args.disfa_subjects}")
    config = WorldConfig(
        seed=args.seed,
        size=args.size,
        lab_subjects=args.subjects,
        frames_per_video=args.frames,
        disfa_subjects=args.disfa_subjects,
        disfa_frames=args.disfa_frames,
        wild_images=args.wild_images,
        label_noise=args.label_noise,
    )
    out: Path = args.out
    start = time.perf_counter()
    try:
        counts = write_world(config, out, domains, workers=args.workers, progress=not args.quiet)
    except PermissionError as err:
        raise UserError(f"cannot write to {err.filename}: permission denied") from None
    seconds = time.perf_counter() - start
    total = sum(counts.values())
    for domain, n in counts.items():
        print(f"{domain:6s} {n:7d} images -> {out / DOMAIN_FOLDERS[domain]}")
    print(f"rendered {total} images in {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} images/s)")
    if not args.no_gallery:
        print(f"gallery -> {write_gallery(config, out / 'gallery.png')}")
    return 0


def run_gallery(args: argparse.Namespace) -> int:
    config = WorldConfig(seed=args.seed, size=args.size)
    print(f"gallery -> {write_gallery(config, args.out)}")
    return 0
