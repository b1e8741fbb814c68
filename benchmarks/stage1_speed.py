"""Stage-1 speed: the training step and its parts (issue 5's benchmarks).

Prints:
  1. the machine's measured dense matmul peak (TFLOP/s) for fp32 (and bf16 on CUDA): the denominator
     of model FLOPs utilisation (MFU);
  2. two-view augmentation throughput: ours (one batched call per view, :mod:`clef.augment`) against
     a plain per-sample loop (the same operations applied image by image, as a per-sample CPU
     transform in a DataLoader would), and the ratio;
  3. decode throughput of :class:`clef.data.dataset.ImageRecords` (PNG files -> uint8 tensors) through
     a DataLoader, for the given numbers of workers;
  4. the stage-1 loss (L_II' + L_IA) forward + backward time at the benchmark batch;
  5. the full stage-1 training step (two views, L_II' + L_IA, AdamW) of a backbone (default: the
     offline default, random weights: speed does not depend on them): frames/s, peak memory, model
     FLOPs per step (``torch.utils.flop_counter``: matmuls and convolutions, forward + backward) and
     MFU = FLOPs / step time / measured matmul peak; and the same step written as a plain PyTorch loop
     (per-sample CPU augmentation, one image-tower call per view), with the ratio ours / plain
     (target >= 1.5).

Numbers from a shared machine are noisy: run it on an idle one.

Usage: ``python benchmarks/stage1_speed.py [--device cpu] [--batch 64] [--size 64] [--workers 0 2]
[--backbone offline] [--backbone-config '{image_encoder: vit}'] [--steps 5]``
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
from clef.engine import EngineConfig, ParamGroup, build_optimizer
from clef.losses import image_text_loss, supcon_loss
from clef.stage1 import Stage1LossConfig, Stage1Step


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


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # whole process, KiB -> MiB


def full_step(
    device: torch.device, backbone: str, backbone_config: dict, batch: int, steps: int, peak: float
) -> dict[str, float]:
    """Time the stage-1 step ours vs plain; returns frames/s, FLOPs, MFU, peak memory."""
    from torch.utils.flop_counter import FlopCounterMode

    from clef.model import build_model

    torch.manual_seed(0)
    model = build_model(backbone, backbone_config, pretrained=False).to(device).train()
    size = model.preprocess.image_size
    texts = [f"The participant does task number {i}. The target emotion is emotion {i}." for i in range(8)]
    tokens = model.tokenize(texts)
    g = torch.Generator().manual_seed(0)
    images_cpu = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    labels_cpu = torch.arange(batch) % len(texts)
    groups = {k: ParamGroup(v, 1e-4) for k, v in model.param_groups().items() if v}
    optimizer = build_optimizer(groups, EngineConfig())
    augment = BatchAugment(AugmentConfig())
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    step = Stage1Step(
        Stage1LossConfig(gather_distributed=False), augment, g, tokens, model.preprocess.normalize
    )

    def ours() -> None:
        batch_ = {"image": images_cpu.to(device), "activity": labels_cpu.to(device)}
        with autocast:
            loss = step(model, batch_)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def plain() -> None:
        # What a straightforward loop does: augment each image on the CPU (a Dataset transform), stack,
        # move, run the image tower once per view, then the same losses and update.
        v1 = torch.cat([augment(images_cpu[i : i + 1], g) for i in range(batch)]).to(device)
        v2 = torch.cat([augment(images_cpu[i : i + 1], g) for i in range(batch)]).to(device)
        labels = labels_cpu.to(device)
        with autocast:
            z1 = model.encode_image(model.preprocess.normalize(v1))
            z2 = model.encode_image(model.preprocess.normalize(v2))
            text = model.encode_text(tokens)
            loss = supcon_loss(z1, z2, labels, 10.0) + image_text_loss(
                torch.cat([z1, z2]), text, torch.cat([labels, labels]), model.scale()
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ours()  # warm-up (allocator, kernels)
    with FlopCounterMode(display=False) as counter:
        ours()
    flops = counter.get_total_flops()
    t_ours = _best_time(ours, device, steps)
    memory = _peak_memory_mb(device)
    t_plain = _best_time(plain, device, max(1, steps // 2))
    return {
        "frames_per_s": batch / t_ours,
        "plain_frames_per_s": batch / t_plain,
        "flops": flops,
        "mfu": flops / t_ours / peak,
        "peak_mb": memory,
        "step_s": t_ours,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Stage-1 speed: the training step and its parts.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="image size of the part benchmarks 2-4")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbone", default="offline")
    parser.add_argument("--backbone-config", default="{}", help="YAML mapping of backbone overrides")
    parser.add_argument("--steps", type=int, default=4, help="timed full steps (best of)")
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

    import yaml

    r = full_step(
        device, args.backbone, yaml.safe_load(args.backbone_config) or {}, args.batch, args.steps, fp32
    )
    print(
        f"stage-1 step ({args.backbone}, {args.batch} frames = {2 * args.batch} views): "
        f"{r['step_s']:.3f} s/step, {r['frames_per_s']:.1f} frames/s, peak memory {r['peak_mb']:.0f} MiB"
    )
    print(
        f"  model FLOPs/step {r['flops'] / 1e9:.2f} GFLOP, MFU {100 * r['mfu']:.1f} % of the fp32 matmul peak"
    )
    print(
        f"  plain loop (per-sample CPU augmentation): {r['plain_frames_per_s']:.1f} frames/s; "
        f"ratio ours / plain {r['frames_per_s'] / r['plain_frames_per_s']:.2f}"
    )


if __name__ == "__main__":
    main()
