"""CPU thread choice for the long-running programs (demo, reproduce)."""

from __future__ import annotations

import os


def apply_threads(requested: int) -> int:
    """Set torch's intra-op threads and return the number used.

    ``requested`` > 0 is used as given. 0 = auto: the cores not already busy according to the
    1-minute load average (at least 1). Reason: on a shared machine, torch's default (one thread per
    core) oversubscribes the cores and its threads spin-wait on each other; we measured a small CNN
    step 10x slower with 2 threads than with 1 on a 2-core machine at load average 10.
    """
    import torch

    if requested <= 0:
        cores = os.cpu_count() or 1
        try:
            busy = os.getloadavg()[0]
        except OSError:  # not available on this platform
            busy = 0.0
        requested = max(1, min(cores, round(cores - busy)))
    torch.set_num_threads(requested)
    return requested
