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
    # One spawn for every check: each child pays torch's import and first-optimiser (dynamo) costs once.
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        _loss_part(rank, out_dir)
        _engine_part(rank, out_dir)
    finally:
        dist.destroy_process_group()


def _loss_part(rank: int, out_dir: str) -> None:
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


def test_helpers_answer_as_one_process_when_not_initialised():
    x = torch.randn(3, 2)
    assert cd.get_rank() == 0 and cd.get_world_size() == 1 and cd.is_main_process()
    assert cd.all_gather_with_grad(x) is x
    assert torch.equal(cd.all_gather_no_grad(x), x)
    ctx = cd.init_from_env("cpu")
    assert ctx.world_size == 1 and ctx.is_main


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return out


def test_two_process_gather_equals_one_process(spawned):
    tmp_path = spawned
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


# ------------------------------------------------------------------------------- engine under DDP
def _engine_setup():
    from clef.engine import ParamGroup, seed_everything

    seed_everything(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    data = [{"x": x[i], "y": y[i]} for i in range(32)]

    def step_fn(m, batch):
        return {"loss": torch.nn.functional.cross_entropy(m(batch["x"]), batch["y"])}

    return model, step_fn, {"all": ParamGroup(model.parameters(), 0.05)}, data


class _Concatenated:
    """Single-process batches = rank 0's batch i followed by rank 1's batch i."""

    def __init__(self, shards):
        self.shards = shards

    def __len__(self):
        return len(self.shards[0])

    def set_epoch(self, epoch, position=0):
        for s in self.shards:
            s.set_epoch(epoch, position)

    def __iter__(self):
        yield from (a + b for a, b in zip(*self.shards, strict=True))


def _engine_part(rank: int, out_dir: str) -> None:
    from clef.data.sampler import RandomBatchSampler
    from clef.engine import EngineConfig, train

    model, step_fn, groups, data = _engine_setup()
    loader = torch.utils.data.DataLoader(data, batch_sampler=RandomBatchSampler(32, 4, seed=2))
    cfg = EngineConfig(steps=6, warmup_steps=1, checkpoint_every=3, progress=False)
    result = train(model, step_fn, groups, loader, cfg, os.path.join(out_dir, "run"))
    torch.save(
        {"weights": model.state_dict(), "loss": result.loss}, os.path.join(out_dir, f"engine{rank}.pt")
    )


def test_two_process_engine_equals_one_process_on_concatenated_batches(spawned, tmp_path):
    from clef.data.sampler import RandomBatchSampler
    from clef.engine import CHECKPOINT_NAME, EngineConfig, load_checkpoint, train

    ranks = [torch.load(spawned / f"engine{r}.pt", weights_only=True) for r in range(WORLD)]
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key  # DDP keeps replicas identical
    assert len(load_checkpoint(spawned / "run" / CHECKPOINT_NAME)["rng"]) == WORLD

    model, step_fn, groups, data = _engine_setup()
    shards = [RandomBatchSampler(32, 4, seed=2, rank=r, world_size=WORLD) for r in range(WORLD)]
    loader = torch.utils.data.DataLoader(data, batch_sampler=_Concatenated(shards))
    cfg = EngineConfig(steps=6, warmup_steps=1, checkpoint_every=3, progress=False)
    result = train(model, step_fn, groups, loader, cfg, tmp_path / "single")
    assert result.loss == pytest.approx(ranks[0]["loss"], rel=1e-5)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ranks[0]["weights"][key], rtol=1e-5, atol=1e-6)
