"""`clef pretrain` / `clef finetune` as a demanding user runs them: used folders, --overwrite, resume
with another config or a bad checkpoint, bad values, and a kill -9 in the middle of a checkpoint write.

Every refusal exits with 2, prints one line naming the file (and the key), and leaves what was
already written byte for byte as it was.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clef.cli import main
from tiny import tiny_pretrain_argv

REPO = Path(__file__).resolve().parents[2]
TINY_CLIP = (
    "{image_size: 32, patch_size: 8, vision_width: 32, vision_layers: 2, vision_heads: 2, "
    "vision_intermediate: 64, text_width: 32, text_layers: 2, text_heads: 2, text_intermediate: 64, "
    "embed_dim: 16}"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    argv = ["synth", "--out", str(out), "--domains", "lab", "--subjects", "4", "--frames", "6"]
    assert main([*argv, "--no-gallery", "--quiet", "--workers", "1"]) == 0
    return out / "bp4d"


def pretrain_argv(world: Path, out: Path, *extra: str) -> list[str]:
    return tiny_pretrain_argv(world, out, *extra, steps=4)


def finetune_argv(world: Path, run: Path, *extra: str) -> list[str]:
    return [
        "finetune",
        "--config",
        str(REPO / "configs" / "finetune" / "world_bp4d_au.yaml"),
        f"data.root={world}",
        f"run_dir={run}",
        "init.backbone=clip-vit-b16",
        f"init.backbone_config={TINY_CLIP}",
        "init.pretrained=false",
        "data.batch_size=16",
        "data.workers=0",
        "engine.steps=2",
        "engine.warmup_steps=1",
        *extra,
        "--quiet",
    ]


@pytest.fixture(scope="module")
def pretrained(world, tmp_path_factory) -> Path:
    """A finished 4-step `clef pretrain` run folder (copy it before changing it)."""
    out = tmp_path_factory.mktemp("pretrained") / "run"
    assert main(pretrain_argv(world, out)) == 0
    return out


@pytest.fixture(scope="module")
def finetuned(world, tmp_path_factory) -> Path:
    """A finished 2-step `clef finetune` run folder (copy it before changing it)."""
    run = tmp_path_factory.mktemp("finetuned") / "run"
    assert main(finetune_argv(world, run)) == 0
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _refused(capsys, argv: list[str], *expected: str) -> str:
    """Run the CLI; assert exit status 2 and one line on stderr holding every ``expected`` text."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("clef: error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, (text, err)
    return err


# ------------------------------------------------------------------------------------ used folders
def test_pretrain_into_a_used_folder_is_refused_and_nothing_changes(world, pretrained, tmp_path, capsys):
    out = _copy(pretrained, tmp_path)
    before = _snapshot(out)
    files = "config.yaml, metrics.jsonl, checkpoint.pt, stage1.safetensors, stage1.json"
    _refused(
        capsys, pretrain_argv(world, out), f"{out} already holds a run ({files})", "--resume", "--overwrite"
    )
    _refused(capsys, pretrain_argv(world, out, "engine.steps=2"), f"{out} already holds a run")
    # Any one file of a run is enough.
    for name in ("metrics.jsonl", "config.yaml"):
        lone = tmp_path / f"only-{name}"
        lone.mkdir()
        shutil.copy(out / name, lone / name)
        _refused(capsys, pretrain_argv(world, lone), f"{lone} already holds a run ({name})")
        assert [p.name for p in lone.iterdir()] == [name]
    assert _snapshot(out) == before


def test_pretrain_overwrite_starts_over_and_keeps_other_files(world, pretrained, tmp_path, capsys):
    out = _copy(pretrained, tmp_path)
    (out / "notes.txt").write_text("mine")
    assert main(pretrain_argv(world, out, "engine.steps=2", "--overwrite")) == 0
    assert _steps(out) == [1, 2]  # the old run's four lines are gone, not followed by two more
    assert json.loads((out / "stage1.json").read_text())["metrics"]["steps"] == 2
    assert (out / "notes.txt").read_text() == "mine"
    _refused(capsys, [*pretrain_argv(world, out), "--overwrite", "--resume"], "exclude each other")


def test_finetune_into_a_used_folder_is_refused_and_overwrite_starts_over(world, finetuned, tmp_path, capsys):
    run = _copy(finetuned, tmp_path)
    before = _snapshot(run)
    _refused(capsys, finetune_argv(world, run), f"{run} already holds a run (", "model.safetensors", "eval")
    assert _snapshot(run) == before
    (run / "zeroshot").mkdir()
    (run / "zeroshot" / "kept.json").write_text("{}")
    assert main(finetune_argv(world, run, "engine.steps=1", "--overwrite")) == 0
    assert _steps(run) == [1]
    assert (run / "model.json").is_file() and (run / "zeroshot" / "kept.json").is_file()


# ------------------------------------------------------------------------ resume with another config
@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["engine.steps=6"], "engine.steps: 4 -> 6"),
        (["optim.lr_image=0.002"], "optim.lr_image: 0.001 -> 0.002"),
        (
            ["loss.temperature=0.2", "data.frame_stride=3"],
            "data.frame_stride: 2 -> 3, loss.temperature: 0.1 -> 0.2",
        ),
    ],
)
def test_pretrain_resume_with_another_config_names_the_keys(
    world, pretrained, tmp_path, capsys, change, named
):
    out = _copy(pretrained, tmp_path)
    before = _snapshot(out)
    _refused(capsys, [*pretrain_argv(world, out, *change), "--resume"], f"{out / 'checkpoint.pt'}: ", named)
    assert _snapshot(out) == before


def test_pretrain_resume_may_move_the_folder_and_change_workers(world, pretrained, tmp_path, capsys):
    out = _copy(pretrained, tmp_path)
    (out / "metrics.jsonl").write_text((out / "metrics.jsonl").read_text() + '{"step": 5, "lo')  # torn
    assert main([*pretrain_argv(world, out, "data.workers=1", "engine.progress=true"), "--resume"]) == 0
    assert _steps(out) == [1, 2, 3, 4]
    assert "final loss" in capsys.readouterr().out


def test_finetune_resume_with_another_config_names_the_keys(world, finetuned, tmp_path, capsys):
    run = _copy(finetuned, tmp_path)
    before = _snapshot(run)
    argv = finetune_argv(world, run, "engine.steps=3", "optim.lr_head=0.02", "--resume")
    _refused(
        capsys, argv, f"{run / 'checkpoint.pt'}: ", "optim.lr_head: 0.01 -> 0.02", "engine.steps: 2 -> 3"
    )
    assert _snapshot(run) == before


# ---------------------------------------------------------------------------------- bad checkpoints
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pretrain_resume_from_bad_checkpoints_is_one_line(world, pretrained, finetuned, tmp_path, capsys):
    out = _copy(pretrained, tmp_path)
    data = (out / "checkpoint.pt").read_bytes()
    ran = tmp_path / "RAN"
    bad = {
        "truncated.pt": (data[: len(data) // 3], "truncated or damaged"),
        "random.pt": (random.Random(0).randbytes(5000), "not a PyTorch checkpoint file"),
        "evil.pt": (
            pickle.dumps(_Payload(ran), protocol=2),
            "refused: it holds a Python object (posix.system)",
        ),
        "stage2.pt": (
            (finetuned / "checkpoint.pt").read_bytes(),
            "a checkpoint of another kind of run: its config is FinetuneConfig, this run's is PretrainConfig",
        ),
    }
    buffer = io.BytesIO()
    torch.save({"model": _Payload(ran)}, buffer)
    bad["evil-zip.pt"] = (buffer.getvalue(), "refused: it holds a Python object (posix.system)")
    before = _snapshot(out)
    for name, (content, reason) in bad.items():
        path = tmp_path / name
        path.write_bytes(content)
        _refused(capsys, [*pretrain_argv(world, out), "--resume", str(path)], f"{path}: {reason}")
    missing = tmp_path / "missing.pt"
    _refused(
        capsys, [*pretrain_argv(world, out), "--resume", str(missing)], f"{missing}: no such checkpoint file"
    )
    assert _snapshot(out) == before and not ran.exists()


def test_finetune_resume_from_a_stage1_checkpoint_or_nothing_is_refused(world, pretrained, tmp_path, capsys):
    run = tmp_path / "run"
    stage1 = pretrained / "checkpoint.pt"
    _refused(
        capsys, finetune_argv(world, run, "--resume", str(stage1)), f"{stage1}: a checkpoint of another kind"
    )
    _refused(
        capsys, finetune_argv(world, run, "--resume"), f"{run / 'checkpoint.pt'}: no such checkpoint file"
    )
    assert not (run / "metrics.jsonl").exists() and not (run / "model.json").exists()


# -------------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("engine.steps=0", "key 'engine.steps' must be an integer >= 1, got 0"),
        ("engine.steps=-3", "key 'engine.steps' must be an integer >= 1, got -3"),
        ("engine.checkpoint_every=0", "key 'engine.checkpoint_every' must be an integer >= 1"),
        ("engine.log_every=-1", "key 'engine.log_every' must be an integer >= 1"),
        ("data.frames_per_activity=0", "key 'data.frames_per_activity' must be an integer >= 1"),
        ("optim.lr_image=.nan", "key 'optim.lr_image' must be a finite number >= 0, got nan"),
        ("optim.lr_text=-1e-5", "key 'optim.lr_text' must be a finite number >= 0, got -1e-05"),
    ],
)
def test_pretrain_bad_values_are_refused_before_anything_is_written(world, tmp_path, capsys, override, key):
    out = tmp_path / "run"
    _refused(capsys, pretrain_argv(world, out, override), f"override '{override}': {key}")
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("engine.steps=0", "key 'engine.steps' must be an integer >= 1, got 0"),
        ("engine.grad_accum=0", "key 'engine.grad_accum' must be an integer >= 1"),
        (
            "optim.lr_image=.nan",
            # refused by the engine's optimiser; once stage 2's OptimConfig checks its learning
            # rates, when the config is read: "key 'optim.lr_image' must be a finite number ..."
            "image' must be a finite number >= 0, got nan",
        ),
    ],
)
def test_finetune_bad_values_are_refused_before_training(world, tmp_path, capsys, override, message):
    run = tmp_path / "run"
    _refused(capsys, finetune_argv(world, run, override), message)
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoint.pt").exists()


# ------------------------------------------------------------------- kill -9 during a checkpoint write
# The child dies by SIGKILL half-way through its N-th checkpoint write (tests/checkpoint_kill.py).
_CHILD = r"""
import os, sys

sys.path.insert(0, os.environ["CLEF_TESTS"])
from checkpoint_kill import die_in_checkpoint_write

die_in_checkpoint_write(int(os.environ["KILL_AT_CHECKPOINT_WRITE"]))
from clef.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _child(argv: list[str], kill_at: int = 0) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "KILL_AT_CHECKPOINT_WRITE": str(kill_at),
        "CLEF_TESTS": str(REPO / "tests"),
    }
    return subprocess.run(
        [sys.executable, "-c", _CHILD, *argv], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # ~35 s: three `clef pretrain` processes (the engine's own is in tests/test_run_folders.py)
def test_kill_9_during_a_checkpoint_write_then_resume_equals_an_uninterrupted_run(world, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    done = _child(pretrain_argv(world, reference))
    assert done.returncode == 0, done.stderr[-2000:]

    # Killed while writing the checkpoint of step 4 (the second write): step 2's checkpoint stays.
    killed = _child(pretrain_argv(world, out), kill_at=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = list(out.glob(".checkpoint.pt.tmp*"))
    assert len(left) == 1 and left[0].stat().st_size > 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert _steps(out) == [1, 2, 3, 4] and not (out / "stage1.safetensors").exists()

    resumed = _child([*pretrain_argv(world, out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(out.glob(".*.tmp*"))  # the half-written file is gone
    assert _steps(out) == [1, 2, 3, 4]  # steps 3-4 redone once, not logged twice
    final, expected = load_file(out / "stage1.safetensors"), load_file(reference / "stage1.safetensors")
    assert final.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(final[key], value), key  # bit for bit
    ours = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    theirs = [json.loads(line)["loss"] for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert ours == theirs
