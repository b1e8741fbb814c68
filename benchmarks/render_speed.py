"""Single-process rendering speed of the synthetic face renderer.

Prints images/s at 64, 112 and 224 pixels, with and without JPEG encoding, for lab-domain frames
(fresh random AU vector and nuisances per frame, a pool of 41 identities as in the lab world).

    PYTHONPATH=src python benchmarks/render_speed.py [--n 2000] [--domain lab] [--processes 2]

With ``--processes P > 1`` it also prints the 64x64 rate (with JPEG) of P worker processes that
each render n/P images, which is how the world is rendered on a multi-core machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np

from clef.synth.identity import sample_identity
from clef.synth.render import encode_jpeg, render_face, sample_nuisance


def bench(size: int, n: int, jpeg: bool, domain: str, span: list | None = None) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process); the timed loop's
    start and end (epoch seconds) are appended to ``span`` if given."""
    rng = np.random.default_rng(0)
    identities = [sample_identity(rng, domain) for _ in range(41)]
    aus = rng.uniform(0, 5, (n, 17)) * (rng.random((n, 17)) < 0.3)
    nuisances = [sample_nuisance(rng, domain) for _ in range(n)]
    for i in range(min(n, 50)):  # warm the per-identity caches
        render_face(identities[i % 41], aus[i], nuisances[i], size, rng=rng)
    t0, c0, e0 = time.perf_counter(), time.process_time(), time.time()
    for i in range(n):
        img = render_face(identities[i % 41], aus[i], nuisances[i], size, rng=rng)
        if jpeg:
            encode_jpeg(img, nuisances[i].jpeg_quality)
    if span is not None:
        span.extend([e0, time.time()])
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def _worker(args: tuple[int, int, str]) -> list:
    size, n, domain = args
    span: list = []
    bench(size, n, jpeg=True, domain=domain, span=span)
    return span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images per measurement")
    parser.add_argument("--domain", default="lab", choices=("lab", "wild"))
    parser.add_argument("--processes", type=int, default=1, help="also measure this many processes at 64x64")
    args = parser.parse_args()
    # CPU-second rates are less disturbed by other jobs on a shared machine than wall-clock rates
    print(f"domain={args.domain}, single process (wall-clock img/s; per-CPU-second img/s in brackets)")
    for size in (64, 112, 224):
        n = args.n if size == 64 else max(200, args.n // (size // 64) ** 2)
        raw = bench(size, n, jpeg=False, domain=args.domain)
        enc = bench(size, n, jpeg=True, domain=args.domain)
        print(
            f"size {size:3d}: {raw[0]:6.0f} ({raw[1]:6.0f}) img/s render only, "
            f"{enc[0]:6.0f} ({enc[1]:6.0f}) img/s with JPEG"
        )
    if args.processes > 1:
        per = args.n // args.processes
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            spans = pool.map(_worker, [(64, per, args.domain)] * args.processes)
        # from the first worker's start to the last one's end of its timed loop
        elapsed = max(sp[1] for sp in spans) - min(sp[0] for sp in spans)
        print(f"size  64, {args.processes} processes: {per * args.processes / elapsed:6.0f} img/s with JPEG")


if __name__ == "__main__":
    main()
