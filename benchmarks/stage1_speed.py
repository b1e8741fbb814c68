"""Stage-1 speed: the training step and its parts (issue 5's benchmarks).

Prints:
  1. the machine's measured dense matmul peak (TFLOP/s) for fp32 (and bf16 on CUDA): the denominator
     of model FLOPs utilisation (MFU), fp32 on CPU and bf16 on CUDA, the dtypes the engine trains in;
  2. two-view augmentation throughput: ours (one batched call per view, :mod:`clef.augment`) against
     a plain per-sample loop (the same operations applied image by image, as a per-sample CPU
     transform in a DataLoader would), and the ratio;
  3. decode throughput of :class:`clef.data.dataset.ImageRecords` (PNG files -> uint8 tensors) through
     a DataLoader, for the given numbers of workers;
  4. the stage-1 loss (L_II' + L_IA) forward + backward time at the benchmark batch;
  5. the full stage-1 training step (two views, L_II' + L_IA, AdamW) of a backbone (default: the
     offline default, random weights: speed does not depend on them), four variants, each in a
     process of its own (the C library's malloc policy is per process, and the engine sets it for CPU
     training), run interleaved one process at a time (best of ``--steps`` each):
     - *ours*: the step :func:`clef.engine.train` runs with the default :class:`EngineConfig`, in
       :func:`clef.engine.training_context` (channels_last convolution weights, freed CPU memory
       kept for reuse, :mod:`clef.cpu_memory`; the engine's fused AdamW; gradient clipping):
       frames/s, peak memory, model FLOPs per step (``torch.utils.flop_counter``: matmuls and
       convolutions, forward + backward) and MFU = FLOPs / step time / measured matmul peak
       (target >= 40 %);
     - *before*: the same engine step with ``channels_last``, ``fused_optimizer`` and
       ``retain_cpu_memory`` off and, for the offline CNN, ``cnn_chunk=0`` (the code before those
       options), for the speed-up they give;
     - *plain*: the same step written as a plain PyTorch loop (per-sample CPU augmentation, one
       image-tower call per view, default memory format, torch's default AdamW, the C library's
       default malloc), and the ratio ours / plain (target >= 1.5);
     - *plain+*: the plain loop with freed CPU memory kept, which splits ours / plain into the malloc
       policy's share and the rest's;
     and, as a cross-check, the best step of ``clef.engine.train`` itself from its images/s log.

Numbers from a shared machine are noisy: run it on an idle one.

Usage: ``python benchmarks/stage1_speed.py [--device cpu] [--batch 64] [--size 64] [--workers 0 2]
[--backbone offline] [--backbone-config '{image_encoder: vit}'] [--steps 4] [--threads N]
[--step-only]``
"""

from __future__ import annotations

import argparse
import contextlib
import resource
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


_TEXTS = [f"The participant does task number {i}. The target emotion is emotion {i}." for i in range(8)]


def _model(device: torch.device, backbone: str, backbone_config: dict):
    from clef.model import build_model

    torch.manual_seed(0)  # every variant starts from the same weights
    return build_model(backbone, backbone_config, pretrained=False).to(device).train()


def _groups(model) -> dict[str, ParamGroup]:
    return {k: ParamGroup(v, 1e-4) for k, v in model.param_groups().items() if v}


def _stage1_step(model, g: torch.Generator) -> Stage1Step:
    """L_II' + L_IA on the benchmark's activity texts, as `clef pretrain` builds it."""
    return Stage1Step(
        Stage1LossConfig(gather_distributed=False),
        BatchAugment(AugmentConfig()),
        g,
        list(_TEXTS),
        model.preprocess.normalize,
    )


def _engine_step(model, cfg: EngineConfig, batch_cpu: dict, device: torch.device, g: torch.Generator):
    """One optimiser step as :func:`clef.engine.train` runs it (call inside ``training_context``).

    Stage1Step under the engine's autocast, backward, gradient clipping, the engine's optimiser
    (:func:`build_optimizer`), zero grads: everything of the engine's step but the logging.
    """
    optimizer = build_optimizer(_groups(model), cfg)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    step = _stage1_step(model, g)
    autocast = torch.autocast(
        device_type="cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"
    )

    def run() -> None:
        batch = {k: v.to(device) for k, v in batch_cpu.items()}
        with autocast:
            loss = step(model, batch)["loss"]
        loss.backward()
        if cfg.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def _plain_step(model, batch_cpu: dict, device: torch.device, g: torch.Generator):
    """The same step as a user's plain loop: per-sample CPU augmentation, one image-tower call per
    view, default memory format, torch's default AdamW (no fused kernel), no clipping."""
    optimizer = build_optimizer(_groups(model), EngineConfig(fused_optimizer=False))
    augment = BatchAugment(AugmentConfig())
    tokens = model.tokenize(_TEXTS)
    images_cpu, labels_cpu = batch_cpu["image"], batch_cpu["activity"]
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def run() -> None:
        # Augment each image on the CPU (a Dataset transform), stack, move, run the image tower once
        # per view, then the same losses and update.
        n = len(images_cpu)
        v1 = torch.cat([augment(images_cpu[i : i + 1], g) for i in range(n)]).to(device)
        v2 = torch.cat([augment(images_cpu[i : i + 1], g) for i in range(n)]).to(device)
        labels = labels_cpu.to(device)
        m = model
        with autocast:
            z1 = m.encode_image(m.preprocess.normalize(v1))
            z2 = m.encode_image(m.preprocess.normalize(v2))
            text = m.encode_text(tokens)
            loss = supcon_loss(z1, z2, labels, 10.0) + image_text_loss(
                torch.cat([z1, z2]), text, torch.cat([labels, labels]), m.scale()
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def _engine_loop(model, cfg: EngineConfig, batch_cpu: dict, device: torch.device, steps: int) -> float:
    """Best seconds per step of :func:`clef.engine.train` itself (its own images/s log, one step a line)."""
    import dataclasses
    import json
    import warnings

    from clef.engine import train

    g = torch.Generator().manual_seed(0)
    step = _stage1_step(model, g)
    cfg = dataclasses.replace(
        cfg, steps=steps, warmup_steps=1, log_every=1, checkpoint_every=10**9, progress=False
    )
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an in-memory list of batches has no resumable sampler
        train(model, step, _groups(model), [batch_cpu] * steps, cfg, tmp, device, generators={"augment": g})
        lines = (Path(tmp) / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["images_per_s"] for line in lines[1:]]  # step 1 warms up
    return len(batch_cpu["image"]) / max(rates)


# The variants of the full step. Each runs in a process of its own: the C library's malloc policy is
# per process, and the engine changes it for CPU training (clef.cpu_memory), so variants sharing a
# process would share (and disturb) one another's heap.
#   ours:   the engine's step with its defaults, in clef.engine.training_context (what train() runs)
#   before: the engine's step before the speed options (channels_last, fused AdamW, CNN chunks,
#           freed memory kept)
#   plain:  the plain loop (_plain_step) with the C library's default malloc policy
#   plain+: the same plain loop with freed memory kept (clef.cpu_memory), which tells how much of
#           ours / plain is the malloc policy and how much the rest
VARIANTS = ("ours", "before", "plain", "plain+")
_BEFORE = EngineConfig(channels_last=False, fused_optimizer=False, retain_cpu_memory=False)


def _variant_worker(
    conn, name: str, device: str, backbone: str, backbone_config: dict, batch: int, threads: int | None
) -> None:
    """Build one variant, warm it up, then answer the parent's commands until "stop".

    Commands: "step" -> (seconds, minor page faults) of one step; "flops" -> model FLOPs of one
    step; "memory" -> peak MiB (CPU: this process's maximum resident set; CUDA: max allocated);
    "loop" -> best seconds per step of clef.engine.train itself (ours only); "stop".
    """
    import contextlib

    from torch.utils.flop_counter import FlopCounterMode

    from clef.cpu_memory import retain_freed_memory
    from clef.engine import training_context

    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(device)
    config = dict(backbone_config)
    if name == "before" and backbone == "offline" and config.get("image_encoder", "cnn") == "cnn":
        config["cnn_chunk"] = 0  # the whole batch in one call, as before the option
    model = _model(device, backbone, config)
    size = model.preprocess.image_size
    g = torch.Generator().manual_seed(0)
    batch_cpu = {
        "image": torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g),
        "activity": torch.arange(batch) % len(_TEXTS),
    }
    with contextlib.ExitStack() as stack:
        if name in ("ours", "before"):
            cfg = EngineConfig() if name == "ours" else _BEFORE
            stack.enter_context(training_context(model, cfg, device))
            fn = _engine_step(model, cfg, batch_cpu, device, g)
        else:
            stack.enter_context(retain_freed_memory(name == "plain+" and device.type == "cpu"))
            fn = _plain_step(model, batch_cpu, device, g)
        fn()  # warm-up: allocator, kernels, optimiser state
        fn()
        _sync(device)
        conn.send("ready")
        while True:
            command = conn.recv()
            if command == "step":
                _sync(device)
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                fn()
                _sync(device)
                seconds = time.perf_counter() - start
                conn.send((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
            elif command == "flops":
                with FlopCounterMode(display=False) as counter:
                    fn()
                conn.send(counter.get_total_flops())
            elif command == "memory":
                conn.send(_peak_memory_mb(device))
            elif command == "loop":
                conn.send(_engine_loop(model, EngineConfig(), batch_cpu, device, 6))
            else:
                break


def full_step(
    device: torch.device,
    backbone: str,
    backbone_config: dict,
    batch: int,
    steps: int,
    peak: float,
    threads: int | None = None,
) -> dict[str, float]:
    """Time the stage-1 step's variants (:data:`VARIANTS`), each in its own process, interleaved.

    The parent sends "step" to one process at a time (A, B, C, D, A, B, ...; the others wait idle on
    their pipe, so they never compete for the cores) and keeps each variant's best time, so a load
    that comes and goes hits them alike. Every variant starts from the same initial weights.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter (and malloc) per variant
    workers = {}
    for name in VARIANTS:
        parent, child = ctx.Pipe()
        args = (child, name, str(device), backbone, backbone_config, batch, threads)
        process = ctx.Process(target=_variant_worker, args=args, daemon=True)
        process.start()
        workers[name] = (parent, process)
    try:
        for name, (conn, _) in workers.items():
            if conn.recv() != "ready":
                raise RuntimeError(f"variant {name} did not start")
        times = {name: float("inf") for name in VARIANTS}
        faults: dict[str, list[int]] = {name: [] for name in VARIANTS}
        for _ in range(steps):
            for name, (conn, _) in workers.items():
                conn.send("step")
                seconds, step_faults = conn.recv()
                times[name] = min(times[name], seconds)
                faults[name].append(step_faults)
        ours = workers["ours"][0]
        ours.send("memory")
        memory = ours.recv()
        ours.send("flops")
        flops = ours.recv()
        ours.send("loop")
        t_loop = ours.recv()
    finally:
        for conn, process in workers.values():
            with contextlib.suppress(OSError):
                conn.send("stop")
            process.join(timeout=30)
    result = {f"{name}_frames_per_s": batch / t for name, t in times.items()}
    result.update({f"{name}_faults": float(np.median(f)) for name, f in faults.items()})
    return {
        **result,
        "frames_per_s": batch / times["ours"],
        "loop_frames_per_s": batch / t_loop,
        "flops": flops,
        "mfu": flops / times["ours"] / peak,
        "before_mfu": flops / times["before"] / peak,
        "loop_mfu": flops / t_loop / peak,
        "peak_mb": memory,
        "step_s": times["ours"],
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
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--step-only", action="store_true", help="only the matmul peak and the full step")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, image {args.size}px"
    )

    # best of 20: a peak measured during a passing slowdown understates the denominator (MFU > 100 %)
    fp32 = matmul_peak(device, torch.float32, 2048 if device.type == "cpu" else 8192, repeats=20)
    print(f"matmul peak fp32: {fp32 / 1e12:.3f} TFLOP/s")
    if device.type == "cuda":
        bf16 = matmul_peak(device, torch.bfloat16, 8192)
        print(f"matmul peak bf16: {bf16 / 1e12:.1f} TFLOP/s")
    # The engine trains in bf16 autocast on CUDA and in fp32 on CPU: MFU is against that dtype's peak.
    peak, peak_name = (bf16, "bf16") if device.type == "cuda" else (fp32, "fp32")

    if not args.step_only:
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
        device,
        args.backbone,
        yaml.safe_load(args.backbone_config) or {},
        args.batch,
        args.steps,
        peak,
        args.threads,
    )
    print(
        f"stage-1 step ({args.backbone}, {args.batch} frames = {2 * args.batch} views, engine defaults: "
        f"channels_last, fused AdamW, CNN chunks, freed CPU memory kept): {r['step_s']:.3f} s/step, "
        f"{r['frames_per_s']:.1f} frames/s, peak memory {r['peak_mb']:.0f} MiB"
    )
    print(
        f"  model FLOPs/step {r['flops'] / 1e9:.2f} GFLOP, "
        f"MFU {100 * r['mfu']:.1f} % of the {peak_name} matmul peak "
        f"(target >= 40 %: {'met' if r['mfu'] >= 0.4 else 'NOT met'})"
    )
    ratio = r["frames_per_s"] / r["plain_frames_per_s"]
    print(
        f"  plain loop (per-sample CPU augmentation, default layout, torch's default AdamW, default "
        f"malloc): {r['plain_frames_per_s']:.1f} frames/s; ratio ours / plain {ratio:.2f} "
        f"(target >= 1.5: {'met' if ratio >= 1.5 else 'NOT met'})"
    )
    print(
        f"  the same plain loop with freed CPU memory kept (clef.cpu_memory): "
        f"{r['plain+_frames_per_s']:.1f} frames/s; "
        f"ours / that {r['frames_per_s'] / r['plain+_frames_per_s']:.2f}"
    )
    print(
        f"  before the speed options (channels_last, fused_optimizer, retain_cpu_memory false, "
        f"cnn_chunk=0): {r['before_frames_per_s']:.1f} frames/s, MFU {100 * r['before_mfu']:.1f} %; "
        f"ours / before {r['frames_per_s'] / r['before_frames_per_s']:.2f}"
    )
    print(
        "  minor page faults per step (median; fresh memory from the kernel): "
        + ", ".join(f"{name} {r[f'{name}_faults']:.0f}" for name in VARIANTS)
    )
    print(
        f"  cross-check, clef.engine.train itself (its images/s log, best step): "
        f"{r['loop_frames_per_s']:.1f} frames/s, MFU {100 * r['loop_mfu']:.1f} %"
    )


if __name__ == "__main__":
    main()
