"""`clef finetune`, `clef evaluate` and `clef crossval` end to end on a tiny synthetic world (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clef.checkpoint import read_metadata
from clef.cli import main
from clef.finetuned import load_finetuned
from clef.labels import BP4D_AUS, RAFDB_CLASSES
from tiny import TINY_CLIP_YAML

REPO = Path(__file__).resolve().parents[2]
# The real CLIP architecture at toy size with random weights (nothing read or downloaded): wiring only.
TINY_CLIP = TINY_CLIP_YAML
FAST = [
    "init.backbone=clip-vit-b16",
    f"init.backbone_config={TINY_CLIP}",
    "init.pretrained=false",
    "data.batch_size=16",
    "engine.steps=2",
    "engine.warmup_steps=1",
]


@pytest.fixture(scope="module")
def world(tiny_world) -> Path:
    return tiny_world


def test_finetune_au_then_evaluate(world, tmp_path, capsys):
    run = tmp_path / "au"
    config = REPO / "configs" / "finetune" / "world_bp4d_au.yaml"
    args = ["finetune", "--config", str(config), f"data.root={world / 'bp4d'}", f"run_dir={run}", *FAST]
    assert main([*args, "--quiet"]) == 0
    assert "mean AU F1" in capsys.readouterr().out
    meta = read_metadata(run / "model")
    assert meta["labels"] == [f"AU{a}" for a in BP4D_AUS] and meta["task"] == "au"
    assert set(meta["thresholds"].values()) == {0.5}
    assert meta["training_config"]["data"]["fold"] == 1 and "mean_f1" in meta["metrics"]
    model, _ = load_finetuned(run / "model")
    assert model.head_kind == "names" and len(model.head.bias) == 12
    assert (run / "eval" / "au_f1.json").is_file() and (run / "config.yaml").is_file()

    out = tmp_path / "eval"
    code = main(
        ["evaluate", str(run / "model"), "--dataset", "bp4d", "--root", str(world / "bp4d"), "--fold", "1"]
        + ["--out", str(out), "--quiet"]
    )
    assert code == 0
    for name in ("au_f1.json", "au_f1.csv", "au_f1.md", "au_f1.png"):
        assert (out / name).is_file()
    result = json.loads((out / "au_f1.json").read_text())
    assert result["aus"] == list(BP4D_AUS) and 0.0 <= result["mean_f1"] <= 1.0
    # The same test fold scored inside finetune and by evaluate gives the same numbers.
    assert result["f1"] == json.loads((run / "eval" / "au_f1.json").read_text())["f1"]


def test_finetune_fer_linear_baseline_then_evaluate(world, tmp_path):
    run = tmp_path / "fer"
    config = REPO / "configs" / "finetune" / "world_rafdb_fer.yaml"
    args = ["finetune", "--config", str(config), f"data.root={world / 'rafdb'}", f"run_dir={run}", *FAST]
    assert main([*args, "method.head=linear", "method.description_loss=false", "--quiet"]) == 0
    meta = read_metadata(run / "model")
    assert meta["labels"] == list(RAFDB_CLASSES) and meta["thresholds"] is None
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            str(run / "model"),
            "--dataset",
            "rafdb",
            "--root",
            str(world / "rafdb"),
            "--out",
            str(out),
        ]
        + ["--quiet"]
    )
    assert code == 0
    result = json.loads((out / "fer.json").read_text())
    assert result["classes"] == list(RAFDB_CLASSES) and len(result["confusion"]) == 7
    assert (out / "fer_confusion.png").is_file() and (out / "fer.md").is_file()


def test_crossval_three_folds(world, tmp_path, capsys):
    run = tmp_path / "cv"
    config = REPO / "configs" / "finetune" / "world_bp4d_au.yaml"
    code = main(
        ["crossval", "--config", str(config), f"data.root={world / 'bp4d'}", f"run_dir={run}", *FAST]
        + ["engine.steps=1", "--quiet"]
    )
    assert code == 0
    summary = json.loads((run / "crossval.json").read_text())
    assert summary["folds"] == [1, 2, 3] and len(summary["mean_f1"]["per_fold"]) == 3
    assert summary["mean_f1"]["mean"] == pytest.approx(sum(summary["mean_f1"]["per_fold"]) / 3)
    assert set(summary["per_au_f1"]) == {f"AU{a}" for a in BP4D_AUS}
    assert "| mean |" in (run / "crossval.md").read_text()
    for fold in (1, 2, 3):
        assert (run / f"fold{fold}" / "model.json").is_file()
        trained = read_metadata(run / f"fold{fold}" / "model")["notes"]["n_train"]
        assert trained > 0
    assert "mean AU F1 over folds" in capsys.readouterr().out


def test_bad_config_key_is_a_one_line_error(tmp_path, capsys):
    assert main(["finetune", "method.heads=names"]) == 2
    assert "unknown key 'method.heads'" in capsys.readouterr().err


def test_crossval_with_a_stage1_hook_sees_only_training_subjects(world, tmp_path):
    from clef.checkpoint import save_checkpoint
    from clef.config import load_config
    from clef.crossval import cross_validate
    from clef.data import load_dataset
    from clef.finetune import FinetuneConfig
    from clef.model import build_model

    records = load_dataset("bp4d", world / "bp4d")
    seen = {}

    def pretrain(fold, train_records, out):
        seen[fold] = set(train_records["subject"])
        model = build_model("clip-vit-b16", yaml.safe_load(TINY_CLIP), pretrained=False)
        save_checkpoint(out / "stage1", model, task="pretrain")
        return out / "stage1"

    cfg = load_config(FinetuneConfig, None, [f"run_dir={tmp_path}", *FAST, "engine.steps=1"])
    result = cross_validate(cfg, folds=(1, 2), records=records, pretrain=pretrain, progress=False)
    for fold, run in zip((1, 2), result.runs, strict=True):
        test_subjects = set(records[records["fold"] == 4 - fold]["subject"])
        assert seen[fold] and not seen[fold] & test_subjects
        assert run.init["checkpoint"].endswith("stage1")


def test_crossval_runs_stage1_per_fold(world, tmp_path):
    run = tmp_path / "cv1"
    stage1 = [
        "init.backbone=clip-vit-b16",
        f"init.backbone_config={TINY_CLIP}",
        "init.pretrained=false",
        "data.workers=0",
        "data.frames_per_activity=2",
        "engine.steps=1",
        "engine.warmup_steps=0",
    ]
    code = main(
        [
            "crossval",
            f"data.root={world / 'bp4d'}",
            f"run_dir={run}",
            *FAST,
            "engine.steps=1",
            "--folds",
            "2",
        ]
        + [arg for kv in stage1 for arg in ("--stage1", kv)]
        + ["--quiet"]
    )
    assert code == 0
    stage1 = run / "fold2" / "stage1" / "stage1"
    meta = read_metadata(run / "fold2" / "model")
    assert Path(meta["notes"]["init"]["checkpoint"]).with_suffix("") == stage1
    stage1_meta = read_metadata(stage1)
    assert stage1_meta["task"] == "pretrain" and stage1_meta["training_config"]["data"]["fold"] == 2
    assert json.loads((run / "crossval.json").read_text())["folds"] == [2]
