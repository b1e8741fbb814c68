"""Run folders (clef.run_folder) through the engine: refusal, overwrite, resume checks, what kills leave."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clef.config import config_changes
from clef.engine import CHECKPOINT_NAME, EngineConfig, load_checkpoint, train
from clef.errors import UserError
from clef.run_folder import (
    atomic_write,
    check_run_folder,
    clear_run_folder,
    remove_temporaries,
    truncate_metrics,
)
from test_engine import CFG, _setup


def _run(run_dir, cfg=CFG, **kwargs):
    model, step_fn, groups, loader, gens = _setup(kill_at_call=kwargs.pop("kill_at_call", None))
    result = train(model, step_fn, groups, loader, cfg, run_dir, generators=gens, **kwargs)
    return model, result


def _killed_run(run_dir, cfg=CFG):
    """Killed in step 6 (micro-batch 11); the folder's last checkpoint is the one of step 3."""
    with pytest.raises(KeyboardInterrupt):
        _run(run_dir, cfg, kill_at_call=11)


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 8-step run and its final weights."""
    run = tmp_path_factory.mktemp("finished") / "run"
    model, _ = _run(run, run_config=CFG)
    return run, {k: v.clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------- used folders
@pytest.mark.parametrize("present", ["metrics.jsonl", "checkpoint.pt", "config.yaml"])
def test_a_folder_holding_any_run_file_is_refused_and_left_as_it_was(finished, tmp_path, present):
    run = tmp_path / "run"
    run.mkdir()
    (run / present).write_bytes((finished[0] / present).read_bytes())
    (run / "notes.txt").write_text("mine")
    before = _snapshot(run)
    with pytest.raises(UserError, match=rf"{run} already holds a run \({present}\).*--resume.*--overwrite"):
        _run(run, overwrite=False)
    assert _snapshot(run) == before


def test_overwrite_replaces_the_run_files_only(finished, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("metrics.jsonl", "checkpoint.pt", "config.yaml"):
        (run / name).write_bytes((finished[0] / name).read_bytes())
    (run / "stage1.json").write_text("{}")  # a program output, named by the caller
    (run / "notes.txt").write_text("mine")
    (run / ".checkpoint.pt.tmp999").write_bytes(b"half")
    cfg = dataclasses.replace(CFG, steps=4)
    _run(run, cfg, overwrite=True, outputs=("stage1.json",))
    assert _steps(run) == [1, 2, 3, 4]  # one run, not the old one's lines followed by the new one's
    assert load_checkpoint(run / CHECKPOINT_NAME)["step"] == 4
    assert not (run / "stage1.json").exists() and not (run / ".checkpoint.pt.tmp999").exists()
    assert (run / "notes.txt").read_text() == "mine"


def test_the_library_default_starts_over_without_appending(finished, tmp_path):
    run = tmp_path / "run"
    _run(run, dataclasses.replace(CFG, steps=2))
    _run(run, dataclasses.replace(CFG, steps=3))  # overwrite=True is the library's default
    assert _steps(run) == [1, 2, 3]


def test_check_run_folder_rules(tmp_path):
    check_run_folder(tmp_path / "new", resume=False, overwrite=False)  # a missing folder is fine
    (tmp_path / "model.json").write_text("{}")
    check_run_folder(tmp_path, resume=False, overwrite=False)  # not a run file ...
    with pytest.raises(UserError, match=r"already holds a run \(model.json\)"):
        check_run_folder(tmp_path, resume=False, overwrite=False, outputs=("model.json",))  # ... unless named
    with pytest.raises(UserError, match="exclude each other"):
        check_run_folder(tmp_path, resume=True, overwrite=True)
    check_run_folder(tmp_path, resume=True, overwrite=False, outputs=("model.json",))
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events").write_text("x")
    assert sorted(clear_run_folder(tmp_path, ("model.json",))) == ["model.json", "tensorboard"]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------- resume with another config
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"steps": 9}, "steps: 8 -> 9"),
        ({"weight_decay": 0.1}, "weight_decay: 0.05 -> 0.1"),
        ({"grad_accum": 1, "warmup_steps": 3}, "warmup_steps: 2 -> 3, grad_accum: 2 -> 1"),
    ],
)
def test_resume_with_another_config_is_refused_naming_the_keys(tmp_path, change, named):
    run = tmp_path / "run"
    _killed_run(run)
    before = _snapshot(run)
    with pytest.raises(UserError, match=rf"checkpoint.pt: resuming with another config .*: {named};"):
        _run(run, dataclasses.replace(CFG, **change), resume=run / CHECKPOINT_NAME)
    assert _snapshot(run) == before


def test_resume_may_change_reporting_and_speed_options_and_stays_exact(finished, tmp_path):
    run = tmp_path / "run"
    _killed_run(run)
    free = dict(progress=True, log_every=2, checkpoint_every=4, fused_optimizer=False, channels_last=False)
    model, result = _run(run, dataclasses.replace(CFG, **free), resume=run / CHECKPOINT_NAME)
    assert result.step == 8
    for key, value in model.state_dict().items():
        assert torch.allclose(value, finished[1][key], rtol=1e-5, atol=1e-6), key


def test_resume_into_a_folder_of_another_run_compares_its_config_yaml(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _killed_run(a)
    _run(b, dataclasses.replace(CFG, steps=2))
    before = _snapshot(b)
    with pytest.raises(
        UserError, match=rf"{b / 'config.yaml'}: resuming with another config .*steps: 2 -> 8"
    ):
        _run(b, resume=a / CHECKPOINT_NAME)
    assert _snapshot(b) == before


def test_config_changes_lists_nested_and_absent_keys():
    @dataclasses.dataclass(frozen=True)
    class Data:
        root: str = "x"
        workers: int = 2
        RESUME_MAY_DIFFER = frozenset({"workers"})

    @dataclasses.dataclass(frozen=True)
    class Run:
        data: Data = Data()
        steps: int = 3

    stored = {"data": {"root": "y", "workers": 9}, "old": 1}
    assert config_changes(stored, Run()) == [
        "data.root: y -> x",
        "steps: (absent) -> 3",
        "old: 1 -> (absent)",
    ]
    assert config_changes({"data": {"root": "x", "workers": 0}, "steps": 3}, Run()) == []


# ---------------------------------------------------------------------------- what a kill leaves
def test_a_torn_last_metrics_line_is_dropped_on_resume(finished, tmp_path):
    run = tmp_path / "run"
    _killed_run(run)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "epoch": 2, "lo')  # a kill in the middle of a write
    model, _ = _run(run, resume=run / CHECKPOINT_NAME)
    assert _steps(run) == list(range(1, 9))
    for key, value in model.state_dict().items():
        assert torch.equal(value, finished[1][key]), key


def test_truncate_metrics_keeps_complete_records_up_to_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4}')  # last line complete, no newline
    truncate_metrics(path, 4)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4}\n'
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    truncate_metrics(path, 1)
    assert path.read_text() == '{"step": 1}\n'
    path.write_text('{"step": 1}\n{"st\n{"step": 2}\n')  # damage in the middle is not what a kill leaves
    before = path.read_bytes()
    with pytest.raises(UserError, match=rf"{path}:2: not a metrics record"):
        truncate_metrics(path, 2)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".metrics.jsonl.tmp*"))


def test_temporaries_of_killed_writes_are_removed_when_the_run_resumes(finished, tmp_path):
    run = tmp_path / "run"
    _killed_run(run)
    left = [run / ".checkpoint.pt.tmp4242", run / ".metrics.jsonl.tmp17", run / ".config.yaml.tmp5"]
    left.append(run / ".stage1.json.tmp8")  # of a program output, named by the caller
    for path in left:
        path.write_bytes(b"PK\x03\x04 half a file")
    (run / ".notes.tmp1").write_text("not ours")
    _run(run, resume=run / CHECKPOINT_NAME, outputs=("stage1.json",))
    assert not any(p.exists() for p in left)
    assert (run / ".notes.tmp1").exists()
    assert remove_temporaries(tmp_path / "missing") == []


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")

    def failing(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    atomic_write(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_resuming_a_finished_run_reports_its_last_loss(finished, tmp_path):
    run = tmp_path / "run"
    _, first = _run(run)
    _, again = _run(run, resume=run / CHECKPOINT_NAME)
    assert again.step == 8 and again.loss == first.loss


def test_other_run_configs_are_told_apart(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class FinetuneConfig:
        engine: EngineConfig = CFG

    run = tmp_path / "run"
    _killed_run(run)
    with pytest.raises(
        UserError, match="another kind of run: its config is EngineConfig, this run's is FinetuneConfig"
    ):
        _run(tmp_path / "other", resume=run / CHECKPOINT_NAME, run_config=FinetuneConfig())


# ------------------------------------------------------------------- kill -9 during a checkpoint write
# A child process trains the tiny model of tests/test_engine.py and dies by SIGKILL half-way through
# its N-th checkpoint write (tests/checkpoint_kill.py). `clef pretrain` goes through the same in
# tests/commands/test_interrupts.py.
_CHILD = r"""
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from checkpoint_kill import die_in_checkpoint_write
from test_engine import CFG, _setup

import torch
from clef.engine import train

run_dir, weights, kill_at = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
real_save = torch.save
die_in_checkpoint_write(kill_at)
resume = run_dir / "checkpoint.pt" if kill_at < 0 else None
model, step_fn, groups, loader, gens = _setup()
train(model, step_fn, groups, loader, CFG, run_dir, generators=gens, resume=resume, overwrite=False)
real_save(model.state_dict(), weights)
"""


def _child(run_dir: Path, weights: Path, kill_at: int) -> subprocess.CompletedProcess:
    """kill_at: the checkpoint write to die in (0: none; -1: resume the folder's checkpoint)."""
    tests = Path(__file__).resolve().parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(tests.parent / "src"), os.environ.get("PYTHONPATH")])
        ),
        "OMP_NUM_THREADS": "1",
    }
    argv = [sys.executable, "-c", _CHILD, str(tests), str(run_dir), str(weights), str(kill_at)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_kill_9_in_a_checkpoint_write_then_resume_gives_the_uninterrupted_weights(tmp_path):
    done = _child(tmp_path / "reference", tmp_path / "reference.pt", kill_at=0)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "killed"
    killed = _child(run, tmp_path / "unused.pt", kill_at=2)  # writes at steps 3, 6, 8: dies in step 6's
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (left,) = run.glob(".checkpoint.pt.tmp*")
    assert left.stat().st_size > 0 and load_checkpoint(run / CHECKPOINT_NAME)["step"] == 3
    assert _steps(run) == [1, 2, 3, 4, 5, 6]

    resumed = _child(run, tmp_path / "resumed.pt", kill_at=-1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(run.glob(".*.tmp*")) and _steps(run) == list(range(1, 9))
    final = torch.load(tmp_path / "resumed.pt", weights_only=True)
    expected = torch.load(tmp_path / "reference.pt", weights_only=True)
    for key, value in expected.items():
        assert torch.equal(final[key], value), key  # bit for bit
