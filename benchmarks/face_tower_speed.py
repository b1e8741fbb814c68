"""Speed and memory of the face-resnet image tower (dlib's face-recognition ResNet) on this CPU.

For each input size (112, 128, 150 px) and torch thread count (1, 2), and for three training
settings (every stage trainable; only the last 2 stages + head; only the last stage + head):

Rates are the best of 3 timing windows (the machine is shared: the least disturbed window).

- forward images/s (``torch.inference_mode``, the same for every setting, so measured once);
- forward + backward images/s of the tower alone (loss = mean square of the embedding; no optimiser);
- peak resident memory of the process (``ru_maxrss``) and its growth over the process's size
  before the first measurement.

Locked leading stages need no ``torch.no_grad``: with frozen parameters and images that need no
gradient autograd records nothing through them, so their activations are not kept for backward
(tests/model/test_face_resnet.py checks this); the timings show what that saves.

Each case runs in a process of its own (peak memory is per process) with the engine's training
layout (convolution weights channels_last, ``EngineConfig.channels_last``; ``--contiguous`` for the
default layout). Random input; dlib's weights are not needed for timing (``pretrained=False``).

Usage: ``PYTHONPATH=src python benchmarks/face_tower_speed.py [--batch 32] [--seconds 2] [--contiguous]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = (112, 128, 150)
THREADS = (1, 2)
SETTINGS = {"all": None, "last 2": 2, "last 1": 1}  # label -> unlocked_last_k (None: unlocked)


def _rate(fn, items: int, seconds: float, windows: int = 3) -> float:
    """Best of ``windows`` timing windows (items/s): on a shared machine the least disturbed one."""
    fn()  # warm-up: allocations, oneDNN kernel selection
    best = 0.0
    for _ in range(windows):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and calls >= 2:
                break
        best = max(best, calls * items / elapsed)
    return best


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_case(
    size: int, threads: int, unlocked: int | None, batch: int, seconds: float, channels_last: bool
) -> dict:
    import torch

    from clef.engine import EngineConfig, training_layout
    from clef.model.face_resnet import build_face_resnet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tower = build_face_resnet(256, size, pretrained=False)
    if unlocked is not None:
        tower.lock(unlocked)
    images = torch.randn(batch, 3, size, size)
    out = {}
    with training_layout(tower, EngineConfig(channels_last=channels_last)):
        base = _rss_mib()

        def train_step():
            tower.zero_grad(set_to_none=True)
            tower(images).pow(2).mean().backward()

        out["train"] = _rate(train_step, batch, seconds)
        if unlocked is None:

            def forward():
                with torch.inference_mode():
                    tower(images)

            out["forward"] = _rate(forward, batch, seconds)
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["growth_mib"] = out["peak_mib"] - base
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each of the 3 timing windows")
    parser.add_argument("--contiguous", action="store_true", help="default (NCHW) layout, not channels_last")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: "size,threads,unlocked"
    args = parser.parse_args()
    if args.case:
        size, threads, unlocked = args.case.split(",")
        k = None if unlocked == "all" else int(unlocked)
        print(json.dumps(run_case(int(size), int(threads), k, args.batch, args.seconds, not args.contiguous)))
        return
    layout = "contiguous (NCHW)" if args.contiguous else "channels_last"
    print(f"face-resnet tower, batch {args.batch}, {layout}, best of 3 x {args.seconds:g} s; img/s, MiB")
    header = ("px", "threads", "trainable", "fwd img/s", "fwd+bwd img/s", "peak MiB", "growth MiB")
    print("".join(f"{h:>14}" for h in header))
    for size in SIZES:
        for threads in THREADS:
            for label, k in SETTINGS.items():
                command = [sys.executable, __file__, "--case", f"{size},{threads},{k or 'all'}"]
                command += ["--batch", str(args.batch), "--seconds", str(args.seconds)]
                command += ["--contiguous"] if args.contiguous else []
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                result = json.loads(
                    subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
                )
                forward = f"{result['forward']:.1f}" if "forward" in result else ""
                row = (size, threads, label, forward, f"{result['train']:.1f}")
                row += (f"{result['peak_mib']:.0f}", f"{result['growth_mib']:.0f}")
                print("".join(f"{v:>14}" for v in row), flush=True)


if __name__ == "__main__":
    main()
