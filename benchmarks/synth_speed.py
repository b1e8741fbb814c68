"""Rendering throughput of the built-in world (issue 2 target: >= 1,000 images/s at 64x64 on 2 cores).

Writes a world through the same code path as `clef synth` (render + JPEG/PNG encode + file write +
label files) into a temporary folder and prints images/s per domain and overall: wall-clock, and per
CPU-second of all processes (parent + workers). On a shared machine the wall-clock rate depends on the
load; the CPU-time rate does not, and ``workers x`` it is what an idle machine reaches.

    python benchmarks/synth_speed.py [--workers 2] [--size 64] [--subjects 12] [--frames 60]
"""

from __future__ import annotations

import argparse
import os
import resource
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
    total_images, total_seconds, total_cpu = 0, 0.0, 0.0
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, writer in (("lab", write_lab), ("disfa", write_disfa), ("wild", write_wild)):
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            n = writer(config, Path(tmp) / name, workers=args.workers, progress=False)
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
            total_images += n
            total_seconds += seconds
            total_cpu += cpu
            print(
                f"{name:6s} {n:6d} images  {seconds:6.2f} s  {n / seconds:7.0f} images/s wall  "
                f"{n / cpu:6.0f} images per CPU-second"
            )
    print(
        f"total  {total_images:6d} images  {total_seconds:6.2f} s  "
        f"{total_images / total_seconds:7.0f} images/s "
        f"(size {args.size}, workers {args.workers})"
    )
    per_cpu = total_images / total_cpu
    print(
        f"{per_cpu:.0f} images per CPU-second -> "
        f"{args.workers * per_cpu:.0f} images/s on {args.workers} idle cores"
    )


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the rendering workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
