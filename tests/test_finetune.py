"""The stage-2 program's parts: learning-rate groups and locking, the label selection, finished-run
reuse rules, and the shipped world configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clef.config import load_config
from clef.engine import EngineConfig, train
from clef.errors import UserError
from clef.finetune import DataConfig, FinetuneConfig, build_finetune_model, resolve_labels
from clef.label_space import label_space
from clef.labels import BP4D_AUS
from clef.prompts import load_prompt_set
from clef.run_config import OptimConfig, TrainableConfig, param_groups
from clef.stage2 import MethodConfig, Stage2Step
from tiny import stage2_batch

REPO = Path(__file__).resolve().parents[1]
PROMPTS = load_prompt_set("labels")
AUS = (1, 2, 4, 12)


def _model(clef, text_blocks=None, image_blocks=None, **method):
    cfg = MethodConfig(**method)
    trainable = TrainableConfig(image_blocks=image_blocks, text_blocks=text_blocks)
    return build_finetune_model(clef, label_space("au", PROMPTS, aus=AUS), cfg, "labels", trainable), cfg


def test_text_tower_gets_the_small_learning_rate_or_stays_frozen(tiny_clip, new_tiny_clip, tmp_path):
    model, cfg = _model(tiny_clip)
    groups = param_groups(
        model.clef, OptimConfig(lr_image=1e-3, lr_text=1e-6, lr_other=1e-3, lr_head=1e-2), model.head
    )
    text_ids = {id(p) for p in model.clef.text_tower.parameters()} - {
        id(p) for p in model.clef.text_tower.projection_parameters()
    }
    assert groups["text"].lr == 1e-6 and {id(p) for p in groups["text"].params} == text_ids
    assert groups["image"].lr == 1e-3 and groups["head"].lr == 1e-2

    locked, cfg = _model(new_tiny_clip(), text_blocks=0)
    groups = param_groups(locked.clef, OptimConfig(), locked.head)
    assert "text" not in groups
    before = {k: v.clone() for k, v in locked.clef.text_tower.state_dict().items()}
    image_before = next(locked.clef.image_tower.parameters()).detach().clone()
    train(
        locked,
        Stage2Step(cfg, None, torch.Generator()),
        groups,
        [stage2_batch()] * 3,
        EngineConfig(steps=3, warmup_steps=0, progress=False),
        tmp_path,
    )
    after = locked.clef.text_tower.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(image_before, next(locked.clef.image_tower.parameters()))


def test_image_blocks_lock_the_leading_image_blocks(tiny_clip):
    model, _ = _model(tiny_clip, image_blocks=1)
    tower = model.clef.image_tower
    first, last = tower.blocks()[0], tower.blocks()[-1]
    assert not any(p.requires_grad for p in first.parameters())
    assert all(p.requires_grad for p in last.parameters())
    assert all(p.requires_grad for m in tower.head() for p in m.parameters())
    with pytest.raises(UserError, match="key 'trainable.image_blocks' must be an integer >= 0, got -1"):
        load_config(FinetuneConfig, None, ["trainable.image_blocks=-1"])


def test_the_linear_baseline_freezes_text_and_scale_whatever_trainable_says(tiny_clip):
    model, _ = _model(tiny_clip, text_blocks=None, head="linear", description_loss=False)
    assert model.clef.text_tower.is_frozen and not model.clef.logit_scale.requires_grad
    assert set(param_groups(model.clef, OptimConfig(), model.head)) == {"image", "other", "head"}


def test_labels_default_to_the_benchmark_aus_and_the_dataset_classes(tiny_world):
    from clef.data import load_dataset

    lab = load_dataset("bp4d", tiny_world / "bp4d")
    assert resolve_labels(lab, DataConfig(dataset="bp4d"), "au") == BP4D_AUS
    assert resolve_labels(lab, DataConfig(dataset="bp4d", aus=(12, 6)), "au") == (12, 6)
    wild = load_dataset("rafdb", tiny_world / "rafdb")
    assert resolve_labels(wild, DataConfig(dataset="rafdb"), "fer") == tuple(wild.attrs["classes"])
    with pytest.raises(UserError, match=r"AU \[99\]"):
        resolve_labels(lab, DataConfig(dataset="bp4d", aus=(99,)), "au")


def test_world_configs_parse():
    for name in ("world_bp4d_au", "world_rafdb_fer"):
        cfg = load_config(FinetuneConfig, REPO / "configs" / "finetune" / f"{name}.yaml")
        assert cfg.method.head == "names" and cfg.method.description_loss
        assert cfg.init.checkpoint is None and cfg.init.backbone == "offline"
