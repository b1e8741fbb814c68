"""How the memory of the stage-1 loss grows with the global batch, with and without gathering.

L_II′ (:func:`clef.losses.supcon_loss`) compares every view with every other view. In one process the
global batch of N frames (2N views) builds 2N × 2N similarity matrices: memory ∝ N². With
``gather_distributed`` each of W ranks builds only its own 2N/W rows against the 2N gathered views:
memory ∝ N²/W, i.e. ∝ (local batch) × N. At a fixed per-rank batch (adding ranks to grow the global
batch) per-rank memory therefore grows linearly in N (open_clip's "local loss"); at a fixed number of
ranks it is W times smaller than one process holding the whole batch.

Measurement: each (mode, N) runs in a fresh Python process, which records its peak resident memory
(``ru_maxrss``) before and after one forward + backward of the loss on CPU; the difference is the
loss's peak working memory (inputs excluded). The gathered mode runs the library's own code as rank 0
of a W-rank world, with the collectives replaced by concatenation of the other ranks' (constant)
embeddings, so no process group is needed.

Usage: ``python benchmarks/loss_memory.py [--dim 512] [--world 8] [--sizes 256 512 1024 2048 4096]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import torch
import clef.losses as L

n_global, dim, world, gathered = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
torch.manual_seed(0)
k = 8  # activities
local = n_global // world if gathered else n_global
z1 = torch.randn(local, dim, requires_grad=True)
z2 = torch.randn(local, dim, requires_grad=True)
labels = torch.randint(0, k, (local,))
if gathered:
    # Rank 0 of `world` ranks: the gather returns [own rows (with grad); other ranks' rows (constants)].
    others = torch.randn((world - 1) * 2 * local, dim)
    other_labels = torch.randint(0, k, ((world - 1) * 2 * local,))
    L.get_world_size = lambda: world
    L.get_rank = lambda: 0
    L.all_gather_with_grad = lambda x: torch.cat([x, torch.nn.functional.normalize(others, dim=-1)])
    L.all_gather_no_grad = lambda x: torch.cat([x, other_labels])
# Warm-up on a tiny batch so that one-off allocations (kernels, thread pools) are not counted.
w = torch.randn(4, dim, requires_grad=True)
L.supcon_loss(w, torch.randn(4, dim), torch.arange(4) % 2, 10.0).backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loss = L.supcon_loss(z1, z2, labels, 10.0, gather_distributed=gathered)
loss.backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mb": (after - before) / 1024, "loss": loss.item()}))
"""


def measure(n: int, dim: int, world: int, gathered: bool) -> float:
    env = dict(
        os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"), OMP_NUM_THREADS="1"
    )
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(dim), str(world), "1" if gathered else "0"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--world", type=int, default=8, help="ranks of the fixed-world column")
    parser.add_argument("--local", type=int, default=256, help="per-rank batch of the fixed-local column")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    args = parser.parse_args()
    print(f"L_II' fwd+bwd peak memory (MB) on CPU, embedding dim {args.dim}; gathered = rank 0 of W ranks")
    print(
        f"{'global N':>9} {'views 2N':>9} {'1 process':>10} {f'W={args.world}':>8} "
        f"{f'local {args.local} (W)':>18} {'2N x 2N fp32':>13}"
    )
    for n in args.sizes:
        single = measure(n, args.dim, 1, gathered=False)
        fixed_world = measure(n, args.dim, args.world, gathered=True)
        world = max(1, n // args.local)
        fixed_local = measure(n, args.dim, world, gathered=world > 1)
        matrix = (2 * n) ** 2 * 4 / 2**20
        print(
            f"{n:>9} {2 * n:>9} {single:>10.1f} {fixed_world:>8.1f} "
            f"{f'{fixed_local:.1f} ({world})':>18} {matrix:>13.1f}"
        )


if __name__ == "__main__":
    main()
