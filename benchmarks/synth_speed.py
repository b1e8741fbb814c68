"""Rendering throughput of the built-in world (issue 2 target: >= 1,000 images/s at 64x64 on 2 cores).

Writes a world through the same code path as `clef synth` (render + JPEG/PNG encode + file write +
label files) into a temporary folder and prints images/s per domain and overall.

    python benchmarks/synth_speed.py [--workers 2] [--size 64] [--subjects 12] [--frames 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from clef.synth.export import write_disfa, write_lab, write_wild
from clef.synth.world import WorldConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--wild-images", type=int, default=2000)
    args = parser.parse_args()
    config = WorldConfig(
        size=args.size,
        lab_subjects=args.subjects,
        frames_per_video=args.frames,
        disfa_subjects=6,
        disfa_frames=200,
        wild_images=args.wild_images,
    )
    total_images, total_seconds = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, writer in (("lab", write_lab), ("disfa", write_disfa), ("wild", write_wild)):
            start = time.perf_counter()
            n = writer(config, Path(tmp) / name, workers=args.workers, progress=False)
            seconds = time.perf_counter() - start
            total_images += n
            total_seconds += seconds
            print(f"{name:6s} {n:6d} images  {seconds:6.2f} s  {n / seconds:7.0f} images/s")
    print(
        f"total  {total_images:6d} images  {total_seconds:6.2f} s  "
        f"{total_images / total_seconds:7.0f} images/s "
        f"(size {args.size}, workers {args.workers})"
    )


if __name__ == "__main__":
    main()
