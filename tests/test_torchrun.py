"""`torchrun` end to end: two CPU processes (gloo) through init_from_env and the engine (slow: ~30 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, sys
import torch
from clef.data.sampler import RandomBatchSampler
from clef.distributed import init_from_env, shutdown
from clef.engine import EngineConfig, ParamGroup, seed_everything, train
from clef.losses import supcon_loss

ctx = init_from_env("cpu")
seed_everything(0, ctx.rank)
model = torch.nn.Linear(4, 8)
g = torch.Generator().manual_seed(0)
data = [{"x": torch.randn(4, generator=g), "y": torch.tensor(i % 3)} for i in range(64)]
loader = torch.utils.data.DataLoader(data, batch_sampler=RandomBatchSampler(64, 8, seed=0))
noise = torch.Generator().manual_seed(ctx.rank)

def step(m, b):
    z1 = m(b["x"] + 0.1 * torch.randn(b["x"].shape, generator=noise))
    return {"loss": supcon_loss(z1, m(b["x"]), b["y"], 10.0, gather_distributed=True)}

cfg = EngineConfig(steps=4, warmup_steps=1, progress=False)
result = train(model, step, {"all": ParamGroup(model.parameters(), 1e-2)}, loader, cfg, sys.argv[1],
               generators={"augment": noise})
# One file per rank: the ranks' stdout lines can interleave.
with open(f"{sys.argv[1]}.rank{ctx.rank}.json", "w") as f:
    summary = {"rank": ctx.rank, "world": ctx.world_size, "loss": result.loss}
    json.dump({**summary, "weight": model.weight.sum().item()}, f)
shutdown()
"""


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    out = subprocess.run(
        [*torchrun, str(script), str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads((tmp_path / f"run.rank{r}.json").read_text()) for r in range(2)]
    assert sorted(r["rank"] for r in lines) == [0, 1] and all(r["world"] == 2 for r in lines)
    assert lines[0]["weight"] == lines[1]["weight"] and lines[0]["loss"] == lines[1]["loss"]
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_finetune_under_torchrun_two_processes(tiny_world, tmp_path):
    """`torchrun -m clef finetune`: both ranks train on their shard, rank 0 writes and evaluates."""
    from tiny import TINY_CLIP_YAML

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run = tmp_path / "ft"
    args = [
        "-m",
        "clef",
        "finetune",
        f"data.root={tiny_world / 'bp4d'}",
        f"run_dir={run}",
        "device=cpu",
        "init.backbone=clip-vit-b16",
        f"init.backbone_config={TINY_CLIP_YAML}",
        "init.pretrained=false",
        "data.batch_size=8",
        "engine.steps=2",
        "engine.warmup_steps=1",
        "engine.log_every=1",
        "--quiet",
    ]
    out = subprocess.run([*torchrun, *args], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("checkpoint") == 1  # only rank 0 reports (and writes) the model
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    meta = json.loads((run / "model.json").read_text())
    assert meta["metrics"]["aus"] and meta["notes"]["n_train"] > 0
