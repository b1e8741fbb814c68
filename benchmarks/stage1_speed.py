"""Stage-1 speed, the parts that need no model yet (issue 5's benchmarks; the model step comes later).

Prints:
  1. the machine's measured dense matmul peak (TFLOP/s) for fp32 (and bf16 on CUDA): the denominator
     of model FLOPs utilisation (MFU);
  2. two-view augmentation throughput: ours (one batched call per view, :mod:`clef.augment`) against
     a plain per-sample loop (the same operations applied image by image, as a per-sample CPU
     transform in a DataLoader would), and the ratio;
  3. decode throughput of :class:`clef.data.dataset.ImageRecords` (PNG files -> uint8 tensors) through
     a DataLoader, for the given numbers of workers;
  4. the stage-1 loss (L_II' + L_IA) forward + backward time at the benchmark batch.

Still to add once ``clef.model`` has landed: images/s and peak memory of the full stage-1 step,
MFU = model FLOPs per step / step time / matmul peak, and the plain-PyTorch-loop ratio for the whole
step (target >= 1.5).

Numbers from a shared machine are noisy: run it on an idle one.

Usage: ``python benchmarks/stage1_speed.py [--device cpu] [--batch 64] [--size 112] [--workers 0 2]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clef.augment import AugmentConfig, BatchAugment, two_views
from clef.data.dataset import ImageRecords
from clef.data.records import make_records
from clef.losses import image_text_loss, supcon_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best achieved FLOP/s of an n × n × n matmul (2 n³ FLOPs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _best_time(lambda: a @ b, device, repeats)


def augment_speed(device: torch.device, batch: int, size: int, repeats: int) -> tuple[float, float]:
    """(ours, per-sample loop) in images/s for two views of a batch of uint8 images."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g).to(device)
    augment = BatchAugment(AugmentConfig(size=size))
    ours = _best_time(lambda: two_views(images, augment, g), device, repeats)

    def per_sample() -> None:
        for i in range(batch):
            two_views(images[i : i + 1], augment, g)

    plain = _best_time(per_sample, device, max(1, repeats // 2))
    return batch / ours, batch / plain


def decode_speed(batch: int, size: int, workers: list[int], n_images: int = 256) -> dict[int, float]:
    """images/s of ImageRecords + DataLoader over ``n_images`` PNG files of ``size`` pixels."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n_images):
            path = Path(tmp) / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
            paths.append(str(path))
        dataset = ImageRecords(make_records({"path": paths}, n_images), image_size=size, expressions=None)
        result = {}
        for _ in torch.utils.data.DataLoader(dataset, batch_size=batch):
            pass  # warm-up: page cache and Pillow's lazily loaded plugins
        for w in workers:
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=w)
            start = time.perf_counter()
            count = sum(len(b["image"]) for b in loader)
            result[w] = count / (time.perf_counter() - start)
        return result


def loss_time(device: torch.device, batch: int, dim: int, activities: int, repeats: int) -> float:
    """Seconds for L_II' + L_IA forward + backward on (batch, dim) embeddings."""
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(batch, dim, generator=g).to(device).requires_grad_()
    z2 = torch.randn(batch, dim, generator=g).to(device).requires_grad_()
    text = torch.randn(activities, dim, generator=g).to(device).requires_grad_()
    labels = (torch.arange(batch) % activities).to(device)

    def step() -> None:
        loss = supcon_loss(z1, z2, labels, 10.0) + image_text_loss(z1, text, labels, 14.3)
        loss.backward()

    return _best_time(step, device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description="Stage-1 speed: the parts that need no model.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, image {args.size}px"
    )

    fp32 = matmul_peak(device, torch.float32, 2048 if device.type == "cpu" else 8192)
    print(f"matmul peak fp32: {fp32 / 1e12:.3f} TFLOP/s")
    if device.type == "cuda":
        bf16 = matmul_peak(device, torch.bfloat16, 8192)
        print(f"matmul peak bf16: {bf16 / 1e12:.1f} TFLOP/s")

    ours, plain = augment_speed(device, args.batch, args.size, args.repeats)
    print(
        f"two-view augmentation: batched {ours:.0f} images/s, per-sample loop {plain:.0f} images/s, "
        f"ratio {ours / plain:.1f}"
    )

    for w, speed in decode_speed(args.batch, args.size, args.workers).items():
        print(f"decode (ImageRecords, PNG {args.size}px, {w} workers): {speed:.0f} images/s")

    seconds = loss_time(device, args.batch, args.dim, 8, args.repeats)
    print(f"L_II' + L_IA forward+backward, batch {args.batch}, dim {args.dim}: {seconds * 1e3:.2f} ms")
    print("full stage-1 step (images/s, MFU, plain-loop ratio): pending clef.model (issue 4)")


if __name__ == "__main__":
    main()
