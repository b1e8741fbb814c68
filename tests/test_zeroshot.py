"""Zero-shot protocols (clef.zeroshot, `clef zeroshot`) on a tiny synthetic world (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import clef.finetune
from clef.cli import main
from clef.engine import EngineConfig
from clef.errors import UserError
from clef.finetune import DataConfig, FinetuneConfig
from clef.labels import EXPRESSIONS, RAFDB_CLASSES
from clef.run_config import InitConfig, TrainableConfig
from clef.stage2 import MethodConfig
from clef.zeroshot import (
    DEFAULT_SEEN,
    au_to_fer_protocol,
    seen_training_records,
    split_classes,
    unseen_expression_protocol,
    write_zeroshot,
)

TINY = {"image_encoder": "cnn", "cnn_widths": [8, 16], "embed_dim": 32}


@pytest.fixture(scope="module")
def world(tiny_world) -> Path:
    return tiny_world


def _cfg(world: Path, run: Path, task: str) -> FinetuneConfig:
    return FinetuneConfig(
        run_dir=str(run),
        init=InitConfig(backbone_config=TINY),
        data=DataConfig(
            dataset="rafdb" if task == "fer" else "bp4d",
            root=str(world / ("rafdb" if task == "fer" else "bp4d")),
            fold=None if task == "fer" else 1,
            batch_size=16,
        ),
        trainable=TrainableConfig(text_blocks=0),
        method=MethodConfig(task=task, head="names", description_loss=True),
        engine=EngineConfig(steps=2, warmup_steps=1, checkpoint_every=100, progress=False),
    )


def test_default_split_is_method_md():
    seen, unseen = split_classes(RAFDB_CLASSES)
    assert set(seen) == set(DEFAULT_SEEN)
    assert set(unseen) == {"surprise", "fear", "disgust"}
    _, unseen8 = split_classes(EXPRESSIONS)
    assert set(unseen8) == {"surprise", "fear", "disgust", "contempt"}
    with pytest.raises(UserError, match="not classes of the dataset"):
        split_classes(RAFDB_CLASSES, seen=("happiness", "boredom"))
    with pytest.raises(UserError, match="seen and unseen"):
        split_classes(RAFDB_CLASSES, seen=RAFDB_CLASSES)


def test_seen_training_records_drop_unseen_and_missing():
    records = pd.DataFrame({"expression": ["happiness", "fear", None, "anger", "surprise"]})
    kept = seen_training_records(records, ("happiness", "anger"))
    assert list(kept["expression"]) == ["happiness", "anger"]


def test_unseen_protocol_never_trains_on_unseen(world, tmp_path, monkeypatch):
    seen_by_training: list[set] = []
    real = clef.finetune.finetune

    def spy(cfg, **kwargs):
        seen_by_training.append(set(kwargs["train_records"]["expression"].dropna()))
        assert tuple(cfg.data.classes) == ("happiness", "sadness", "anger", "neutral") or set(
            cfg.data.classes
        ) == set(DEFAULT_SEEN)
        return real(cfg, **kwargs)

    monkeypatch.setattr(clef.finetune, "finetune", spy)
    result = unseen_expression_protocol(
        _cfg(world, tmp_path / "zs", "fer"), kinds=("names", "descriptions"), progress=False
    )
    # The training records and the trained label space hold seen classes only.
    assert seen_by_training and seen_by_training[0] <= set(DEFAULT_SEEN)
    assert set(result.train_expressions) <= set(DEFAULT_SEEN) and set(result.train_classes) == set(
        DEFAULT_SEEN
    )
    meta = json.loads((tmp_path / "zs" / "model.json").read_text())
    assert set(meta["labels"]) == set(DEFAULT_SEEN)
    # Scored over all 7 classes, with chance beside the numbers.
    names = result.scores[0]
    assert names.classes == list(RAFDB_CLASSES) and set(names.unseen) == {"surprise", "fear", "disgust"}
    assert names.chance_unseen == pytest.approx(1 / 7) and names.chance_unseen_only == pytest.approx(1 / 3)
    assert 0 <= names.accuracy_unseen <= 1 and names.n_unseen > 0
    assert [s.texts for s in result.scores] == ["names", "descriptions"]
    paths = write_zeroshot(result, tmp_path / "out")
    assert "(14.3)" in paths[1].read_text()


def test_unseen_protocol_refuses_linear_head(world, tmp_path):
    cfg = _cfg(world, tmp_path / "x", "fer")
    cfg = FinetuneConfig(
        **{**cfg.__dict__, "method": MethodConfig(task="fer", head="linear", description_loss=False)}
    )
    with pytest.raises(UserError, match="text head"):
        unseen_expression_protocol(cfg, progress=False)


def test_au_to_fer_uses_no_expression_training(world, tmp_path):
    result = clef.finetune.finetune(_cfg(world, tmp_path / "au", "au"), progress=False)
    wild = __import__("clef.data", fromlist=["load_dataset"]).load_dataset("rafdb", world / "rafdb")
    test = wild[wild["split"] == "test"]
    zs = au_to_fer_protocol(result.checkpoint, test, progress=False)
    assert zs.train_classes == [] and zs.train_expressions == []
    assert {s.texts for s in zs.scores} == {"names", "descriptions"}
    for s in zs.scores:
        assert s.chance_all == pytest.approx(1 / len(s.classes)) and s.n_all == len(test)
    fer = clef.finetune.finetune(_cfg(world, tmp_path / "fer", "fer"), progress=False)
    with pytest.raises(UserError, match="AU-trained"):
        au_to_fer_protocol(fer.checkpoint, test, progress=False)


def test_cli_zeroshot_both_protocols(world, tmp_path, capsys):
    fast = [
        "init.backbone_config={image_encoder: cnn, cnn_widths: [8, 16], embed_dim: 32}",
        "data.batch_size=16",
    ]
    fast += ["engine.steps=2", "engine.warmup_steps=1", "trainable.text_blocks=0"]
    code = main(
        [
            "zeroshot",
            "expressions",
            "--config",
            "configs/finetune/world_rafdb_fer.yaml",
            f"data.root={world / 'rafdb'}",
        ]
        + [f"run_dir={tmp_path / 'a'}", *fast, "--quiet"]
    )
    assert code == 0
    assert "chance 14.3" in capsys.readouterr().out
    assert (tmp_path / "a" / "zeroshot" / "zeroshot.md").is_file()
    code = main(
        ["zeroshot", "au-to-fer", "--fer-root", str(world / "rafdb"), "--quiet"]
        + ["--config", "configs/finetune/world_bp4d_au.yaml", f"data.root={world / 'bp4d'}"]
        + [f"run_dir={tmp_path / 'b'}", *fast]
    )
    assert code == 0
    saved = json.loads((tmp_path / "b" / "zeroshot" / "zeroshot.json").read_text())
    assert saved["train_classes"] == [] and len(saved["scores"]) == 2


def test_finetune_reuses_a_finished_run_of_the_same_config_only(world, tmp_path, monkeypatch):
    import dataclasses

    cfg = _cfg(world, tmp_path / "run", "au")
    first = clef.finetune.finetune(cfg, progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run of the same config must not train again")

    monkeypatch.setattr(clef.finetune, "train", no_training)
    again = clef.finetune.finetune(cfg, progress=False, reuse=True)
    assert again.result.f1 == first.result.f1 and again.result.aus == first.result.aus
    assert (again.n_train, again.n_test) == (first.n_train, first.n_test)
    other = dataclasses.replace(cfg, seed=cfg.seed + 1)  # another config in the same folder retrains
    assert clef.finetune.finished_run(other) is None
    with pytest.raises(AssertionError, match="must not train"):
        clef.finetune.finetune(other, progress=False, reuse=True)
    with pytest.raises(AssertionError, match="must not train"):
        clef.finetune.finetune(cfg, progress=False)  # reuse is opt-in
