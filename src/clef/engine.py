"""The training engine shared by both stages: optimiser, schedule, loop, checkpoints, logs.

The engine knows nothing about CLEF's losses: the stage program supplies a *step function*
``step_fn(model, batch) -> {"loss": 0-d tensor, other scalars to log...}`` that runs the model on a
batch (already on the device) and returns the loss. The engine owns everything around it:

* AdamW with one learning rate per named parameter group (image tower, text tower, new heads...);
  parameters with ``ndim < 2`` (norms, biases, logit scale) get no weight decay; parameters with
  ``requires_grad=False`` (a locked tower) are left out and never change;
* a warm-up + cosine learning-rate multiplier precomputed per optimiser step (DINO style: an array
  indexed by step, so the learning rate of any step is known before the run and after a resume);
* bf16 autocast on CUDA only (CPU runs stay fp32), gradient accumulation, gradient-norm clipping;
* speed, all on by default: torch's fused AdamW kernel, convolution weights in channels_last (NHWC)
  memory format during the run (:func:`training_layout`), and on CPU freed memory kept for reuse
  between steps instead of handed back to the kernel (:mod:`clef.cpu_memory`); the last two are
  entered by :func:`training_context`;
* a non-finite loss (or gradient norm) stops the run at once with a message naming the step;
* atomic checkpoints (:func:`clef.run_folder.atomic_write`: temp file, fsync, ``os.replace``) every
  ``checkpoint_every`` steps and at the end, holding model, optimiser, step, sampler position (epoch
  + batches consumed), the RNG states of every rank (python, numpy, torch, CUDA, and the caller's
  generators, e.g. the augmentation's) and the run's config, so that :func:`train` with ``resume=``
  continues exactly: on CPU a killed-and-resumed run ends with bit-identical weights to an
  uninterrupted one; a resume from a checkpoint of another config or program is refused, naming
  what differs;
* the run folder's rules (:mod:`clef.run_folder`), checked before anything is written: a folder that
  holds a run is refused unless resumed or overwritten, what killed writes left is removed, a resumed
  log keeps its records up to the checkpoint;
* rank-0-only I/O: a tqdm bar (loss, lr, images/s), ``metrics.jsonl``, optional TensorBoard (only if
  the ``tensorboard`` package is installed), the merged config as ``config.yaml`` in the run folder.

Distributed: under ``torchrun`` (see :func:`clef.distributed.init_from_env`) the model and the step
function are wrapped together in one module under DDP, so DDP sees the whole forward pass (the model
contract has no loss-computing ``forward``); gradients are averaged over ranks. One process uses the
same path without the wrapper's collectives.

Step order of one optimiser step (after DINO): set learning rates for the step -> for each
micro-batch: forward under autocast, backward of loss / accumulation -> all-reduce the loss for
logging and the finiteness check -> clip -> optimiser step -> zero grads -> log -> checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pickle
import random
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm.auto import tqdm

from clef import run_folder
from clef.config import config_changes, config_to_dict, require_number, save_config
from clef.cpu_memory import retain_freed_memory
from clef.distributed import barrier, get_rank, get_world_size, is_initialized
from clef.errors import UserError

__all__ = [
    "EngineConfig",
    "ParamGroup",
    "NonFiniteLossError",
    "TrainResult",
    "StepFn",
    "warmup_cosine",
    "build_optimizer",
    "seed_everything",
    "train",
    "training_layout",
    "training_context",
    "load_checkpoint",
    "CHECKPOINT_NAME",
]

CHECKPOINT_NAME = run_folder.CHECKPOINT
_FORMAT = "clef-train-checkpoint/1"

StepFn = Callable[[torch.nn.Module, dict[str, Any]], Mapping[str, torch.Tensor]]
Monitor = Callable[[torch.nn.Module], Mapping[str, float]]


@dataclass(frozen=True)
class EngineConfig:
    """Optimisation and bookkeeping settings of :func:`train` (one *step* = one optimiser update)."""

    steps: int = 1000
    warmup_steps: int = 100
    final_lr_ratio: float = 0.0  # learning rate at the end of the cosine, as a fraction of the peak
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_accum: int = 1  # micro-batches per optimiser step
    clip_grad_norm: float | None = 1.0
    checkpoint_every: int = 500
    log_every: int = 10
    bf16: bool = True  # autocast to bfloat16 on CUDA; ignored on CPU
    progress: bool = True
    tensorboard: bool = False
    find_unused_parameters: bool = False  # DDP: set when some trainable parameter may get no gradient
    # Speed (benchmarks/stage1_speed.py; neither changes what is learned beyond float rounding):
    # torch's fused AdamW kernel, one pass over each parameter instead of ~10 elementwise ops per
    # tensor (the default implementation on CPU); used when every parameter is on CPU or CUDA.
    fused_optimizer: bool = True
    # Convolution weights (4-D parameters) in channels_last (NHWC) memory format during training:
    # oneDNN convolutions and GroupNorm run ~1.3x faster in NHWC on CPU; the layout is restored when
    # :func:`train` returns, and checkpoints hold the default (contiguous) layout.
    channels_last: bool = True
    # On CPU, keep freed memory in the process (glibc malloc settings, :mod:`clef.cpu_memory`): every
    # step reuses the previous step's blocks instead of page-faulting fresh ones from the kernel
    # (stage-1 step of the offline default: ~77,000 minor faults without, ~600 with; the step alone
    # 1.2x faster, `clef pretrain` 1.07x in images/s). Restored when train() returns.
    retain_cpu_memory: bool = True

    # May change when a run is resumed (clef.config.config_changes): how the run is reported, where
    # checkpoints fall, and the speed options, none of which changes what is learned.
    RESUME_MAY_DIFFER: ClassVar[frozenset[str]] = frozenset(
        {
            "progress",
            "tensorboard",
            "log_every",
            "checkpoint_every",
            "find_unused_parameters",
            "fused_optimizer",
            "channels_last",
            "retain_cpu_memory",
        }
    )

    def __post_init__(self) -> None:
        """Ranges, so that a bad value fails when the config is read, not steps into a run.

        ``warmup_steps > steps`` is allowed: the whole run is warm-up (a short smoke run such as
        ``train.steps=2`` should not need a second override).

        Raises:
            clef.config.InvalidValue: a value out of range or not finite (the key and the value named).
        """
        for key in ("steps", "grad_accum", "checkpoint_every", "log_every"):
            require_number(key, getattr(self, key), integer=True, at_least=1)
        require_number("warmup_steps", self.warmup_steps, integer=True, at_least=0)
        require_number("final_lr_ratio", self.final_lr_ratio, at_least=0, at_most=1)
        require_number("weight_decay", self.weight_decay, at_least=0)
        for beta in self.betas:
            require_number("betas", beta, at_least=0, below=1)
        require_number("eps", self.eps, above=0)
        if self.clip_grad_norm is not None:
            require_number("clip_grad_norm", self.clip_grad_norm, above=0)


@dataclass(frozen=True)
class ParamGroup:
    """Parameters trained at one peak learning rate (the schedule multiplies it per step)."""

    params: Iterable[torch.nn.Parameter]
    lr: float


@dataclass(frozen=True)
class TrainResult:
    step: int
    epoch: int
    loss: float  # mean loss over ranks and micro-batches of the last step
    checkpoint: Path | None  # the last checkpoint written (rank 0), None elsewhere


class NonFiniteLossError(UserError, RuntimeError):
    """The loss or the gradient norm became NaN/inf; the run stopped before the optimiser step.

    A :class:`clef.errors.UserError` (what to change is a setting: the learning rate, the inputs),
    so every command reports it in one line."""


def warmup_cosine(total_steps: int, warmup_steps: int, final_ratio: float = 0.0) -> np.ndarray:
    """Learning-rate multiplier for each optimiser step 0..total_steps-1.

    Linear warm-up ``(s + 1) / warmup_steps`` for ``s < warmup_steps`` (the first step already moves,
    step ``warmup_steps - 1`` reaches 1), then a half cosine from 1 towards ``final_ratio`` over the
    remaining steps: ``final + (1 - final) / 2 · (1 + cos(π (s - W) / (T - W)))``.
    """
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0; got {total_steps}, {warmup_steps}")
    warmup_steps = min(warmup_steps, total_steps)
    warm = (np.arange(warmup_steps) + 1) / max(1, warmup_steps)
    rest = np.arange(total_steps - warmup_steps)
    cos = final_ratio + (1 - final_ratio) * 0.5 * (1 + np.cos(np.pi * rest / max(1, len(rest))))
    return np.concatenate([warm, cos]).astype(np.float64)


def build_optimizer(groups: Mapping[str, ParamGroup], cfg: EngineConfig) -> torch.optim.AdamW:
    """AdamW with two optimiser groups per named group: decayed (ndim >= 2) and not decayed (ndim < 2).

    Frozen parameters (``requires_grad=False``) are left out. Each optimiser group carries its
    ``name`` (``"image"``, ``"image/no_decay"``) and ``base_lr`` (the peak learning rate).

    Raises:
        ValueError: a parameter appears in two groups, or no parameter is trainable.
        UserError: a learning rate is negative or not finite (a NaN would train NaN weights).
    """
    seen: set[int] = set()
    param_groups = []
    for name, group in groups.items():
        if not (isinstance(group.lr, (int, float)) and math.isfinite(group.lr) and group.lr >= 0):
            raise UserError(
                f"the learning rate of parameter group '{name}' must be a finite number >= 0, "
                f"got {group.lr!r}"
            )
        decay, no_decay = [], []
        for p in group.params:
            if not p.requires_grad:
                continue
            if id(p) in seen:
                raise ValueError(f"a parameter of group '{name}' is also in another group")
            seen.add(id(p))
            # Norm gains, biases and scalars (logit scale) are not decayed: decay would pull gains to 0.
            (decay if p.ndim >= 2 else no_decay).append(p)
        for suffix, params, wd in (("", decay, cfg.weight_decay), ("/no_decay", no_decay, 0.0)):
            if params:
                param_groups.append(
                    {
                        "params": params,
                        "lr": group.lr,
                        "base_lr": group.lr,
                        "weight_decay": wd,
                        "name": name + suffix,
                    }
                )
    if not param_groups:
        raise ValueError("no trainable parameters in the given groups")
    fused = cfg.fused_optimizer and all(
        p.device.type in _FUSED_DEVICES and p.is_floating_point() for g in param_groups for p in g["params"]
    )
    # fused=None leaves torch's default (a per-tensor loop on CPU, foreach on CUDA).
    return torch.optim.AdamW(param_groups, betas=cfg.betas, eps=cfg.eps, fused=True if fused else None)


_FUSED_DEVICES = ("cpu", "cuda")


def _after_load(optimizer: torch.optim.Optimizer) -> None:
    """After ``load_state_dict``: the implementation chosen at construction, state laid out like params.

    ``load_state_dict`` copies every group setting from the checkpoint, including ``fused`` and
    ``foreach``; a checkpoint written with another implementation would otherwise switch it. And it
    keeps the saved memory layout of ``exp_avg``/``exp_avg_sq``: after a change of ``channels_last``
    they would differ from their parameter's, which torch's fused kernel does not check: it pairs
    elements by storage order and silently updates the wrong weights (measured with torch 2.13).
    """
    fused = bool(optimizer.defaults.get("fused"))
    for group in optimizer.param_groups:
        group["fused"] = optimizer.defaults.get("fused")
        group["foreach"] = optimizer.defaults.get("foreach")
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)  # param's strides
        if fused and "step" in state:  # the fused kernel wants a float32 step count on the param's device
            state["step"] = state["step"].to(device=param.device, dtype=torch.float32)


def _channels_last_safe(model: torch.nn.Module) -> bool:
    """False when the model has a convolution that oneDNN mis-computes in channels_last on CPU.

    oneDNN's backward-weights kernel for 1×1 convolutions with stride > 1 ("reduce to unit stride")
    writes past its workspace in NHWC when the input channels per group are fewer than its channel
    block (16 floats on AVX-512, 8 on AVX2): heap corruption, hangs or wrong weight gradients
    (uxlfoundation/oneDNN#6035; reproduced here with torch 2.13 for 4-15 channels, while 16-256
    channels match the NCHW gradients). Such models (e.g. a SmallCNN with a stage of width 8) keep
    the default layout.
    """
    for m in model.modules():
        if (
            isinstance(m, torch.nn.Conv2d)
            and m.kernel_size == (1, 1)
            and any(s > 1 for s in m.stride)
            and m.in_channels // m.groups < 16
        ):
            return False
    return True


@contextlib.contextmanager
def training_layout(model: torch.nn.Module, cfg: EngineConfig):
    """Context in which ``model`` has the memory layout :func:`train` trains in.

    With ``cfg.channels_last``, every 4-D parameter (convolution weights) not already in
    channels_last (NHWC) format is converted in place (same ``Parameter`` objects, same values, so
    optimisers built before or after see them), and converted back to the default contiguous layout
    on exit, also on an exception. Activations follow the weights: a convolution with NHWC weights
    produces NHWC outputs, so inputs need no conversion. Models without 4-D parameters are untouched,
    and so are models that hit a known oneDNN bug in NHWC (see :func:`_channels_last_safe`).
    """
    converted: list[torch.nn.Parameter] = []
    if cfg.channels_last and _channels_last_safe(model):
        for p in model.parameters():
            if p.ndim == 4 and not p.is_contiguous(memory_format=torch.channels_last):
                p.data = p.data.contiguous(memory_format=torch.channels_last)
                converted.append(p)
    try:
        yield model
    finally:
        for p in converted:
            p.data = p.data.contiguous()
            if p.grad is not None:
                p.grad = p.grad.contiguous()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch; ranks get different streams (``seed + rank``).

    Call it before building the model: DDP then broadcasts rank 0's initial weights anyway.
    """
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002 - the legacy global stream is what third-party code draws from
    torch.manual_seed(s)


class _StepModule(torch.nn.Module):
    """Model + step function as one module, so that DDP's forward covers the whole loss computation."""

    def __init__(self, model: torch.nn.Module, step_fn: StepFn) -> None:
        super().__init__()
        self.model = model
        self.step_fn = step_fn

    def forward(self, batch: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return self.step_fn(self.model, batch)


# ----------------------------------------------------------------------------------------- RNG state
def _rng_state(generators: Mapping[str, torch.Generator], device: torch.device) -> dict[str, Any]:
    # Everything as tensors / plain Python so that torch.load(weights_only=True) can read it back.
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 - saving the global stream, on purpose
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, torch.Generator], device: torch.device
) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    missing = set(generators) - set(state["generators"])
    if missing:
        raise ValueError(f"checkpoint has no state for generators {sorted(missing)}")
    for name, g in generators.items():
        g.set_state(state["generators"][name])


def _as_tuple(x: Any) -> Any:
    # random.setstate needs tuples; a round trip through some serialisers turns them into lists.
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _gather_rng(generators: Mapping[str, torch.Generator], device: torch.device) -> list[dict[str, Any]]:
    mine = _rng_state(generators, device)
    if not is_initialized():
        return [mine]
    everyone: list[Any] = [None] * get_world_size()
    dist.all_gather_object(everyone, mine)
    return everyone


# -------------------------------------------------------------------------------------- checkpoints
_CHECKPOINT_KEYS = ("step", "epoch", "position", "model", "optimizer", "rng")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (``torch.load(weights_only=True)``, on CPU).

    Nothing in the file is executed: ``weights_only`` refuses every pickled object other than
    tensors and plain containers before it is built.

    Raises:
        UserError: one line naming the file and what is wrong: it does not exist; it is empty,
            truncated or damaged; it holds Python objects other than tensors; it is not a clef
            training checkpoint (e.g. a model file).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'a folder, not a' if path.is_dir() else 'no such'} checkpoint file")
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise UserError(f"{path}: empty file (an interrupted write?), not a checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, KeyError... for bad files
        raise UserError(f"{path}: {_unreadable(err, head, path)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise UserError(f"{path}: not a clef training checkpoint (no format tag {_FORMAT!r})")
    missing = [key for key in _CHECKPOINT_KEYS if key not in ckpt]
    if missing:
        raise UserError(f"{path}: an incomplete clef training checkpoint (no {', '.join(missing)})")
    return ckpt


def _unreadable(err: Exception, head: bytes, path: Path) -> str:
    """Why ``torch.load`` could not read a file, in one line."""
    code = re.search(r"GLOBAL ([\w.]+)", str(err)) if isinstance(err, pickle.UnpicklingError) else None
    if code is not None:
        return (
            f"refused: it holds a Python object ({code.group(1)}) that unpickling would run; "
            "a clef training checkpoint holds only tensors and plain values (nothing was run)"
        )
    if path.suffix == ".safetensors":
        return "a model file; resume takes the run's training checkpoint (checkpoint.pt)"
    if head == b"PK\x03\x04":  # a zip archive, torch's format: the end is missing or damaged
        return "truncated or damaged (an interrupted write or copy?), not a readable checkpoint"
    return "not a PyTorch checkpoint file"


# --------------------------------------------------------------------------------------------- loop
def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Mapping):
        batch = batch["image"] if "image" in batch else next(iter(batch.values()))
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return int(batch.shape[0])


class _Throughput:
    """Images per second over the steps since the last log line (all ranks' images together)."""

    def __init__(self) -> None:
        self.start, self.images = time.perf_counter(), 0

    def add(self, images: int) -> None:
        self.images += images

    def rate(self) -> float:
        """Images per second since the last call (or since construction); starts a new window."""
        now = time.perf_counter()
        rate = self.images / max(now - self.start, 1e-9)
        self.start, self.images = now, 0
        return rate


class _Logger:
    """Rank-0 reporting: the progress bar, ``metrics.jsonl``, TensorBoard when asked and installed.

    On other ranks (``enabled=False``) every method does nothing, so the loop has no rank test.
    """

    def __init__(self, run_dir: Path, cfg: EngineConfig, enabled: bool, initial_step: int) -> None:
        self.cfg, self.enabled = cfg, enabled
        self.path = run_dir / "metrics.jsonl"
        self.bar = tqdm(
            total=cfg.steps,
            initial=initial_step,
            disable=not (enabled and cfg.progress),
            dynamic_ncols=True,
            unit="step",
        )
        self.tb = None
        if enabled and cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "tensorboard=true but the tensorboard package is not installed; logging to JSONL only",
                    stacklevel=3,
                )
            else:
                self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def logs(self, step: int) -> bool:
        """Whether optimiser step ``step`` (1-based) is logged: every ``log_every`` steps and the last."""
        return self.enabled and (step % self.cfg.log_every == 0 or step == self.cfg.steps)

    def step_done(
        self,
        step: int,
        epoch: int,
        values: Mapping[str, float],
        optimizer: torch.optim.Optimizer,
        throughput: _Throughput,
    ) -> None:
        """After optimiser step ``step`` (1-based): a log line when :meth:`logs` says so."""
        if not self.enabled:
            return
        if self.logs(step):
            record = {"step": step, "epoch": epoch, **values}
            record.update({f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups})
            record["images_per_s"] = throughput.rate()
            self._write(record)
            self.bar.set_postfix(
                loss=f"{values['loss']:.4f}",
                lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                img_s=f"{record['images_per_s']:.0f}",
            )
        self.bar.update(1)

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()


@contextlib.contextmanager
def training_context(model: torch.nn.Module, cfg: EngineConfig, device: torch.device | str):
    """Everything :func:`train` sets up around its steps: :func:`training_layout` and, on a CPU
    ``device`` with ``cfg.retain_cpu_memory``, :func:`clef.cpu_memory.retain_freed_memory`.

    Both are undone on exit. Code that times the engine's step outside :func:`train`
    (``benchmarks/stage1_speed.py``) runs it in this context, so it measures what training runs.
    """
    retain = cfg.retain_cpu_memory and torch.device(device).type == "cpu"
    with training_layout(model, cfg), retain_freed_memory(retain):
        yield model


def train(
    model: torch.nn.Module,
    step_fn: StepFn,
    param_groups: Mapping[str, ParamGroup],
    loader: Iterable,
    cfg: EngineConfig,
    run_dir: str | Path,
    device: torch.device | str = "cpu",
    generators: Mapping[str, torch.Generator] | None = None,
    run_config: Any = None,
    resume: str | Path | None = None,
    overwrite: bool = True,
    outputs: Sequence[str] = (),
    monitor: Monitor | None = None,
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` optimiser steps, or the remaining ones when resuming.

    The run folder follows :mod:`clef.run_folder`'s rules; everything is checked before anything
    is written (a refused run leaves the folder as it was).

    Args:
        model: on ``device`` already; its ``state_dict`` is what checkpoints hold. With
            ``cfg.channels_last`` its 4-D parameters are NHWC during the run and contiguous again after.
        step_fn: ``(model, batch) -> {"loss": 0-d tensor, ...}``; other entries are scalars to log.
        param_groups: name -> :class:`ParamGroup`; names appear in the logs (``lr/<name>``).
        loader: an iterable of batches (dicts of tensors), normally a ``DataLoader`` whose
            ``batch_sampler`` follows the sampler protocol of :mod:`clef.data.sampler`
            (``set_epoch(epoch, position)``); it is re-iterated at every epoch. Without that protocol
            the run still trains but cannot resume mid-epoch exactly (a warning says so).
        cfg: :class:`EngineConfig`.
        run_dir: the run folder (created): ``config.yaml``, ``metrics.jsonl``, ``checkpoint.pt``.
        device: where batches go.
        generators: named ``torch.Generator`` objects the step function draws from (augmentation),
            saved and restored with the checkpoint.
        run_config: the merged config dataclass to save as ``config.yaml`` and inside checkpoints.
        resume: a checkpoint to continue from (same world size for exact RNG restoration). It must
            have been written by a run of the same config (``run_config``, else ``cfg``), up to the
            fields its dataclasses list in ``RESUME_MAY_DIFFER``; so must ``run_dir/config.yaml``.
        overwrite: when ``run_dir`` already holds a run and ``resume`` is None: True removes that
            run's files (:func:`clef.run_folder.clear_run_folder`) and starts over; False refuses.
            True is the library's default (programs that re-run into their folders rely on it);
            the command line passes False unless ``--overwrite`` is given.
        outputs: the stage program's own files in ``run_dir`` (``stage1.safetensors`` ...): they
            count as "holds a run" and an overwrite removes them too.
        monitor: ``(model) -> {name: float}``, called on rank 0 at every logged step after the
            optimiser step; its values join the step's line in ``metrics.jsonl`` (e.g. how spread the
            embeddings of a fixed batch are). It must leave the model as it found it (parameters,
            train/eval mode) and draw from no random stream the run uses, so that a monitored run
            learns exactly what an unmonitored one does.

    Returns:
        :class:`TrainResult`.

    Raises:
        NonFiniteLossError: the loss or gradient norm became non-finite (message names the step).
        UserError: ``run_dir`` holds a run and neither ``resume`` nor ``overwrite``; ``resume`` is
            missing, unreadable, not a clef training checkpoint, or of another config (the message
            names the keys that differ); a learning rate is not finite.
    """
    with training_context(model, cfg, device):
        return _train(
            model,
            step_fn,
            param_groups,
            loader,
            cfg,
            Path(run_dir),
            torch.device(device),
            dict(generators or {}),
            run_config,
            resume=resume,
            overwrite=overwrite,
            outputs=tuple(outputs),
            monitor=monitor,
        )


def _train(
    model: torch.nn.Module,
    step_fn: StepFn,
    param_groups: Mapping[str, ParamGroup],
    loader: Iterable,
    cfg: EngineConfig,
    run_dir: Path,
    device: torch.device,
    generators: dict[str, torch.Generator],
    run_config: Any,
    *,
    resume: str | Path | None,
    overwrite: bool,
    outputs: tuple[str, ...],
    monitor: Monitor | None,
) -> TrainResult:
    """The loop; the step order is the module docstring's. The phases around it are named below."""
    world, main = get_world_size(), get_rank() == 0
    config = run_config if run_config is not None else cfg  # what config.yaml and checkpoints hold
    overwrite = overwrite and resume is None  # a resumed run keeps its folder
    run_folder.check_run_folder(run_dir, resume=resume is not None, overwrite=overwrite, outputs=outputs)
    optimizer = build_optimizer(param_groups, cfg)
    schedule = warmup_cosine(cfg.steps, cfg.warmup_steps, cfg.final_lr_ratio)
    sampler = _resumable_sampler(loader)
    step, epoch, position, last_loss = 0, 0, 0, float("nan")
    if resume is not None:
        step, epoch, position, last_loss = _resume(
            resume, model, optimizer, generators, device, config, run_dir
        )
    barrier()  # every rank has checked the folder before rank 0 changes it
    if main:
        _prepare_run_folder(run_dir, config, step if resume is not None else None, overwrite, outputs)
    module = _step_module(model, step_fn, device, cfg)
    autocast = torch.autocast(
        device_type="cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"
    )
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    checkpoints = _Checkpointer(
        run_dir / CHECKPOINT_NAME, model, optimizer, generators, device, cfg, run_config
    )
    logger, throughput = _Logger(run_dir, cfg, main, step), _Throughput()
    batches = _batches(loader, sampler, epoch, position)
    optimizer.zero_grad(set_to_none=True)
    try:
        while step < cfg.steps:
            _set_learning_rates(optimizer, schedule[step])
            sums: dict[str, torch.Tensor] = {}
            for micro in range(cfg.grad_accum):
                epoch, position, batch = next(batches)
                batch = _to_device(batch, device)
                throughput.add(_batch_size(batch) * world)
                # Gradients are all-reduced only on the last micro-batch of a step.
                last_micro = micro == cfg.grad_accum - 1
                with contextlib.nullcontext() if (world == 1 or last_micro) else module.no_sync():
                    with autocast:
                        out = module(batch)
                    (out["loss"] / cfg.grad_accum).backward()
                for key, value in out.items():
                    sums[key] = sums[key] + value.detach().float() if key in sums else value.detach().float()

            values = _mean_over_ranks(sums, cfg.grad_accum, world)
            last_loss = values["loss"]
            values.update(_optimizer_step(optimizer, trainable, cfg, last_loss, step, epoch))
            step += 1

            if monitor is not None and logger.logs(step):
                values.update(monitor(model))
            logger.step_done(step, epoch, values, optimizer, throughput)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoints.save(step, epoch, position, last_loss)
    finally:
        batches.close()
        logger.close()
    return TrainResult(step=step, epoch=epoch, loss=last_loss, checkpoint=checkpoints.last)


# ------------------------------------------------------------------------------ phases of the loop
def _resume(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: Mapping[str, torch.Generator],
    device: torch.device,
    config: Any,
    run_dir: Path,
) -> tuple[int, int, int, float]:
    """Load a checkpoint of this run into ``model``, ``optimizer`` and the RNGs.

    Returns:
        (step, epoch, position, loss of the last step).

    Raises:
        UserError: see :func:`load_checkpoint` and :func:`_check_same_run`; nothing was loaded.
    """
    ckpt = load_checkpoint(path)
    _check_same_run(Path(path), ckpt, config, run_dir)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    _after_load(optimizer)
    rng, world = ckpt["rng"], get_world_size()
    if len(rng) == world:
        _set_rng_state(rng[get_rank()], generators, device)
    else:
        warnings.warn(
            f"checkpoint was written by {len(rng)} processes, this run has {world}: RNG not restored",
            stacklevel=3,
        )
    return int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["position"]), float(ckpt.get("loss", math.nan))


def _check_same_run(path: Path, ckpt: Mapping[str, Any], config: Any, run_dir: Path) -> None:
    """Refuse to resume ``config`` from a checkpoint (or into a folder) of another run.

    Compared: the kind of config (``PretrainConfig`` vs ``FinetuneConfig``: a checkpoint of the other
    stage), then every field except those in ``RESUME_MAY_DIFFER`` (:func:`clef.config.config_changes`),
    against the checkpoint's config and against ``run_dir/config.yaml`` when it exists.

    Raises:
        UserError: one line naming the file and, for a config change, the keys (``steps: 2 -> 3``).
    """
    kind = type(config).__name__
    stored = ckpt.get("config") if ckpt.get("config") is not None else ckpt.get("engine")
    # "config_type" is absent in checkpoints written before it was stored: compare the keys then.
    stored_kind = ckpt.get("config_type")
    names = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else None
    if (stored_kind is not None and stored_kind != kind) or (
        stored_kind is None and names is not None and isinstance(stored, Mapping) and set(stored) != names
    ):
        its = f"its config is {stored_kind}" if stored_kind else "its config has other keys"
        raise UserError(
            f"{path}: a checkpoint of another kind of run: {its}, this run's is {kind} "
            "(another stage or program wrote it)"
        )
    sources = [(path, stored)]
    folder_config = run_dir / run_folder.CONFIG
    if folder_config.is_file():
        try:
            sources.append((folder_config, yaml.safe_load(folder_config.read_text())))
        except yaml.YAMLError:
            raise UserError(f"{folder_config}: not valid YAML; the run's config cannot be compared") from None
    for source, stored_config in sources:
        changes = config_changes(stored_config, config)
        if changes:
            shown = ", ".join(changes[:6]) + (f" and {len(changes) - 6} more" if len(changes) > 6 else "")
            raise UserError(
                f"{source}: resuming with another config than the run's: {shown}; resume with the run's "
                "config (its config.yaml), or start over with --overwrite"
            )


def _prepare_run_folder(
    run_dir: Path, config: Any, resume_step: int | None, overwrite: bool, outputs: tuple[str, ...]
) -> None:
    """Rank 0, after every check passed: create the folder, remove what killed writes left, remove
    the old run when overwriting, save the merged config, and when resuming keep the log up to the
    checkpoint's step."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run_folder.remove_temporaries(run_dir, outputs)
    if resume_step is None and overwrite:
        run_folder.clear_run_folder(run_dir, outputs)
    save_config(config, run_dir / run_folder.CONFIG)
    if resume_step is not None:
        run_folder.truncate_metrics(run_dir / run_folder.METRICS, resume_step)


def _step_module(model: torch.nn.Module, step_fn: StepFn, device: torch.device, cfg: EngineConfig):
    """Model + step function as one module, under DDP when there is more than one process."""
    module: torch.nn.Module = _StepModule(model, step_fn)
    if get_world_size() > 1:
        module = torch.nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters,
        )
    return module.train()


def _resumable_sampler(loader: Iterable) -> Any:
    """The loader's batch sampler if it can restart mid-epoch (``set_epoch(epoch, position)``), else None."""
    sampler = getattr(loader, "batch_sampler", None)
    if hasattr(sampler, "set_epoch"):
        return sampler
    warnings.warn(
        "the loader's batch sampler has no set_epoch(epoch, position): resume is not exact", stacklevel=4
    )
    return None


def _batches(loader: Iterable, sampler: Any, epoch: int, position: int) -> Iterator[tuple[int, int, Any]]:
    """``(epoch, position, batch)`` from the resume point on, epoch after epoch, without end.

    ``position`` counts the batches consumed in ``epoch`` (this one included). With a ``sampler``
    (:func:`_resumable_sampler`), each epoch starts with ``set_epoch(epoch, position)``.

    Raises:
        ValueError: a whole epoch yielded no batch.
    """
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch, position)
        started_at = position
        # A DataLoader draws its workers' base seed from the global torch RNG when an iterator is
        # made; a resumed run makes one at a point where the original run did not, so the draw is
        # kept off the global stream (loaders here only decode, so worker seeds do not matter).
        with torch.random.fork_rng(devices=[]):
            epoch_batches = iter(loader)
        for batch in epoch_batches:
            position += 1
            yield epoch, position, batch
        # The epoch ran out (possibly in the middle of an accumulation, which carries over).
        if started_at == 0 and position == 0:
            raise ValueError("the loader yielded no batch in a whole epoch")
        epoch, position = epoch + 1, 0


def _set_learning_rates(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * float(multiplier)  # a python float: weights_only-loadable


def _mean_over_ranks(sums: Mapping[str, torch.Tensor], micro_batches: int, world: int) -> dict[str, float]:
    """The step function's outputs averaged over micro-batches and ranks (one all-reduce)."""
    keys = sorted(sums)
    means = torch.stack([sums[k] for k in keys]) / micro_batches
    if world > 1:
        dist.all_reduce(means)  # every rank sees the same values -> the same decisions
        means /= world
    return dict(zip(keys, means.tolist(), strict=True))


def _optimizer_step(
    optimizer: torch.optim.Optimizer,
    trainable: list[torch.nn.Parameter],
    cfg: EngineConfig,
    loss: float,
    step: int,
    epoch: int,
) -> dict[str, float]:
    """Finiteness check, gradient clipping, update, zeroed gradients; returns ``{"grad_norm": ...}``
    when clipping (the norm before clipping).

    Raises:
        NonFiniteLossError: the loss or the gradient norm is NaN/inf; nothing was updated.
    """
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"loss is {loss} at step {step + 1} (epoch {epoch}); stopped before the update: "
            "lower the learning rate or check the inputs."
        )
    values = {}
    if cfg.clip_grad_norm is not None:
        values["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_grad_norm))
        if not math.isfinite(values["grad_norm"]):
            raise NonFiniteLossError(
                f"gradient norm is {values['grad_norm']} at step {step + 1} (epoch {epoch}); "
                "stopping before the update."
            )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return values


class _Checkpointer:
    """Writes the resumable training state to one path (rank 0; every rank takes part in the RNG gather)."""

    def __init__(
        self,
        path: Path,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        generators: Mapping[str, torch.Generator],
        device: torch.device,
        cfg: EngineConfig,
        run_config: Any,
    ) -> None:
        self.path, self.model, self.optimizer = path, model, optimizer
        self.generators, self.device = generators, device
        self.engine = config_to_dict(cfg)
        self.config = config_to_dict(run_config) if run_config is not None else None
        self.config_type = type(run_config if run_config is not None else cfg).__name__
        self.last: Path | None = None  # the last checkpoint written (rank 0)

    def save(self, step: int, epoch: int, position: int, loss: float) -> None:
        rng = _gather_rng(self.generators, self.device)  # collective: every rank takes part
        if get_rank() != 0:
            return
        state = {
            "format": _FORMAT,
            "step": step,
            "epoch": epoch,
            "position": position,
            # contiguous: the checkpoint does not depend on the training layout (channels_last)
            "model": {k: v.contiguous() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "world_size": get_world_size(),
            "engine": self.engine,
            "config": self.config,
            "config_type": self.config_type,  # a resume of another program's run is refused
            "loss": loss,
        }
        run_folder.atomic_write(self.path, lambda tmp: torch.save(state, tmp))
        self.last = self.path
