"""Two gloo processes with gathering give the 1-process loss and gradients on the concatenated batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clef import distributed as cd
from clef.losses import image_text_loss, nt_xent_loss, supcon_loss

WORLD = 2
B, D, K = 6, 5, 3


def _inputs():
    g = torch.Generator().manual_seed(11)
    z1 = torch.randn(WORLD * B, D, generator=g, dtype=torch.float64)
    z2 = torch.randn(WORLD * B, D, generator=g, dtype=torch.float64)
    txt = torch.randn(K, D, generator=g, dtype=torch.float64)
    labels = torch.randint(0, K, (WORLD * B,), generator=g)
    return z1, z2, txt, labels


def _losses(z1, z2, txt, labels, gather):
    return {
        "supcon": lambda: supcon_loss(z1, z2, labels, 6.0, gather_distributed=gather),
        "nt_xent": lambda: nt_xent_loss(z1, z2, 0.2, gather_distributed=gather),
        "image_text": lambda: image_text_loss(z1, txt, labels, 6.0, gather_distributed=gather),
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        z1, z2, txt, labels = _inputs()
        rows = slice(rank * B, (rank + 1) * B)
        result = {}
        for name in ("supcon", "nt_xent", "image_text"):
            a = z1[rows].clone().requires_grad_()
            b = z2[rows].clone().requires_grad_()
            t = txt.clone().requires_grad_()
            loss = _losses(a, b, t, labels[rows], True)[name]()
            loss.backward()
            result[name] = {
                "loss": loss.detach(),
                "logged": cd.all_reduce_mean(loss.detach()),
                "g1": a.grad,
                "g2": b.grad if b.grad is not None else torch.zeros_like(b),
                "gt": t.grad if t.grad is not None else torch.zeros_like(t),
            }
        result["rank"] = cd.get_rank()
        result["world"] = cd.get_world_size()
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_helpers_answer_as_one_process_when_not_initialised():
    x = torch.randn(3, 2)
    assert cd.get_rank() == 0 and cd.get_world_size() == 1 and cd.is_main_process()
    assert cd.all_gather_with_grad(x) is x
    assert torch.equal(cd.all_gather_no_grad(x), x)
    ctx = cd.init_from_env("cpu")
    assert ctx.world_size == 1 and ctx.is_main


def test_two_process_gather_equals_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["world"] == WORLD

    z1, z2, txt, labels = _inputs()
    for name in ("supcon", "nt_xent", "image_text"):
        a, b, t = (x.clone().requires_grad_() for x in (z1, z2, txt))
        ref = _losses(a, b, t, labels, False)[name]()
        ref.backward()
        # The loss that is logged (mean over ranks) equals the single-process loss.
        per_rank = torch.stack([r[name]["loss"] for r in ranks])
        assert per_rank.mean().item() == pytest.approx(ref.item(), rel=1e-12), name
        assert ranks[0][name]["logged"].item() == pytest.approx(ref.item(), rel=1e-12), name
        # DDP averages gradients over ranks: rank r's row gradients / W = the 1-process gradient of its rows.
        g1 = torch.cat([r[name]["g1"] for r in ranks]) / WORLD
        torch.testing.assert_close(g1, a.grad, rtol=1e-10, atol=1e-12, msg=name)
        if name != "image_text":
            g2 = torch.cat([r[name]["g2"] for r in ranks]) / WORLD
            torch.testing.assert_close(g2, b.grad, rtol=1e-10, atol=1e-12, msg=name)
        else:
            # The text tower is replicated: DDP's mean of the ranks' text gradients is the 1-process one.
            gt = torch.stack([r[name]["gt"] for r in ranks]).mean(0)
            torch.testing.assert_close(gt, t.grad, rtol=1e-10, atol=1e-12)
