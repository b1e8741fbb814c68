"""Keep freed CPU memory in the process while training: glibc's malloc settings for a training loop.

Why: PyTorch on CPU allocates every activation and gradient with the C library's ``malloc``. glibc
serves large blocks with ``mmap`` and gives them back to the kernel on ``free`` (and trims the top of
its heap once enough of it is free), so each training step asks the kernel for the same few hundred
MiB again, and every fresh page costs a page fault when it is first written. On the offline default's
stage-1 step (64 frames, 128 views of 64 px; ``benchmarks/stage1_speed.py``) that was ~77,000 minor
page faults per step. With :func:`retain_freed_memory` the step takes ~600 faults and the freed
blocks are reused from the heap at once: the step alone ran 1.23x faster (0.627 -> 0.509 s, one
process each), a 40-step ``clef pretrain`` 1.07x (92.8 -> 99.2 images/s, median of its log). The
peak memory is the same (the step needs it anyway); it is only not handed back between steps.

How: ``mallopt(M_MMAP_MAX, 0)`` serves every block from the heap, and a high ``M_TRIM_THRESHOLD``
keeps the heap's free top. On leaving, the heap is trimmed (``malloc_trim``), so the memory goes
back to the system, and the settings become what glibc's own adaptive thresholds reach in a
long-running process (mmap above 32 MiB, trim above 64 MiB): setting a threshold turns glibc's
adaptation off, so the pristine defaults (128 KiB, which would make later large allocations slow)
cannot be restored exactly.

A no-op where the C library is not glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
from collections.abc import Iterator

__all__ = ["retain_freed_memory", "available"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4

_RETAIN = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))  # mallopt takes an int: 2 GiB
_AFTER = ((_M_MMAP_MAX, 65536), (_M_MMAP_THRESHOLD, 32 * 2**20), (_M_TRIM_THRESHOLD, 64 * 2**20))

_depth = 0  # nested contexts: only the outermost one changes and restores the settings


@functools.cache  # platform.libc_ver() reads the interpreter's binary: look once per process
def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 (attribute lookup: the symbols exist)
    except (OSError, AttributeError):
        return None
    return libc


def available() -> bool:
    """True where :func:`retain_freed_memory` changes anything (Linux with glibc)."""
    return _libc() is not None


def _set(libc: ctypes.CDLL, settings: tuple[tuple[int, int], ...]) -> None:
    for param, value in settings:
        libc.mallopt(ctypes.c_int(param), ctypes.c_int(value))


@contextlib.contextmanager
def retain_freed_memory(enabled: bool = True) -> Iterator[None]:
    """Context in which freed CPU memory stays in the process for reuse (see the module docstring).

    Process-wide (``malloc`` has one policy per process); nesting is allowed, the outermost context
    decides. ``enabled=False`` (or a C library other than glibc) leaves malloc as it is.
    """
    global _depth
    libc = _libc() if enabled else None
    if libc is None:
        yield
        return
    if _depth == 0:
        _set(libc, _RETAIN)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            _set(libc, _AFTER)
            libc.malloc_trim(ctypes.c_size_t(0))
