"""Process-group helpers: one code path for 1..N processes.

Every helper answers as a single process would when ``torch.distributed`` is not initialised (rank 0,
world size 1, gathers return their input), so losses and the engine never branch on "am I
distributed". Launch with ``torchrun --nproc-per-node N ...``: :func:`init_from_env` reads the
variables torchrun sets and picks NCCL for CUDA devices and gloo otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "init_from_env",
    "shutdown",
    "is_initialized",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_gather_with_grad",
    "all_gather_no_grad",
    "all_reduce_mean",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: its rank, the world size and the device it should use."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str | torch.device = "cpu") -> DistContext:
    """Join the process group torchrun describes in the environment, or run as a single process.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Under torchrun with CUDA each process takes
            ``cuda:LOCAL_RANK`` (the index given here is ignored, one GPU per process).

    Returns:
        the :class:`DistContext`; ``world_size == 1`` when ``WORLD_SIZE`` is unset or 1.
    """
    device = torch.device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    elif dist.is_initialized() and device.type == "cuda":
        device = torch.device("cuda", local_rank)
    return DistContext(rank=get_rank(), local_rank=local_rank, world_size=get_world_size(), device=device)


def shutdown() -> None:
    """Leave the process group if one was joined (safe to call always)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank, 0 when not distributed."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of processes, 1 when not distributed."""
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """True on the process that does I/O (rank 0)."""
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward routes each slice's gradient back to the rank that owns it.

    Every rank computes a loss that depends on every rank's rows, so the gradient of a rank's rows is
    the *sum* over ranks of the gradient each rank's loss sends to those rows: backward all-reduces the
    full gradient (sum) and keeps the local slice. (A reduce-scatter would move less data; all-reduce
    is used because gloo has no reduce-scatter and the gathered tensors here are small embeddings.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.rows = x.shape[0]
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every rank in rank order -> (world * B, ...), differentiably.

    Every rank must pass the same shape. Returns ``x`` itself when not distributed.
    """
    if get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every rank in rank order -> (world * B, ...), no gradient."""
    if get_world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (a new tensor; ``x`` is untouched). Identity when not distributed."""
    if get_world_size() == 1:
        return x.clone()
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / get_world_size()
