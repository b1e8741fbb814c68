"""Stage-1 program and `clef pretrain`: configs parse, the CLI pre-trains a tiny synthetic world."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from clef.cli import main
from clef.config import load_config
from clef.errors import UserError
from clef.pretrain import PretrainConfig
from tiny import tiny_pretrain_argv

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "pretrain").glob("**/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    cfg = load_config(PretrainConfig, path)
    assert cfg.data.root and cfg.engine.steps > 0


def test_bad_override_is_a_one_line_error(capsys):
    assert main(["pretrain", "data.batch=3"]) == 2
    assert "unknown key 'data.batch'" in capsys.readouterr().err
    with pytest.raises(UserError, match="data.root is required"):
        from clef.pretrain import select_records

        select_records(PretrainConfig().data.__class__())


@pytest.fixture(scope="module")
def world(tiny_world) -> Path:
    return tiny_world / "bp4d"


def _argv(world: Path, out: Path, steps: int) -> list[str]:
    return tiny_pretrain_argv(world, out, steps=steps)


def test_cli_pretrains_a_tiny_world_and_resumes(world, tmp_path, capsys, monkeypatch):
    import clef.pretrain
    from clef.checkpoint import load_checkpoint

    class Interrupted(clef.pretrain.Stage1Step):
        calls = 0

        def __call__(self, model, batch):
            Interrupted.calls += 1
            if Interrupted.calls == 3:  # in step 3, after the checkpoint of step 2
                raise KeyboardInterrupt
            return super().__call__(model, batch)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(clef.pretrain, "Stage1Step", Interrupted)
        assert main(_argv(world, out, 3)) == 130
    assert "interrupted" in capsys.readouterr().err and not (out / "stage1.safetensors").exists()
    # Continue the same run from its checkpoint to its 3 steps.
    assert main([*_argv(world, out, 3), "--resume"]) == 0
    assert "pre-trained 3 steps on 192 frames of 8 activities" in capsys.readouterr().out
    model, meta = load_checkpoint(out / "stage1")
    assert meta["task"] == "pretrain" and meta["labels"] == [f"T{i}" for i in range(1, 9)]
    assert meta["training_config"]["data"]["frames_per_activity"] == 2
    assert "happiness" in meta["notes"]["activity_texts"]["T1"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["loss_ii"] > 0 and r["loss_ia"] > 0 for r in records)
    assert (out / "config.yaml").exists()
