"""For the child processes of the interruption tests: die by SIGKILL in the middle of a checkpoint write.

Not a test module; the children put ``tests/`` on ``sys.path`` and call :func:`die_in_checkpoint_write`.
"""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import torch


def die_in_checkpoint_write(n: int) -> None:
    """Replace ``torch.save``: the ``n``-th write of the engine's temporary checkpoint file writes half
    of it, then kills this process with SIGKILL (no handler, no ``finally`` runs). ``n < 1``: never."""
    real_save, writes = torch.save, 0

    def save(obj, f, *args, **kwargs):
        nonlocal writes
        if isinstance(f, (str, Path)) and Path(f).name.startswith(".checkpoint.pt.tmp"):
            writes += 1
            if writes == n:
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                with open(f, "wb") as out:
                    out.write(buffer.getvalue()[: buffer.tell() // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
