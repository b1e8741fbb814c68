"""Stage 2's step (docs/method.md §4): the loss composition of every head, prompt draws, locking in
the step, positive-class weights and the method config's checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clef.augment import AugmentConfig, BatchAugment
from clef.config import load_config
from clef.errors import UserError
from clef.finetune import FinetuneConfig, build_finetune_model
from clef.finetuned import FineTuneModel
from clef.label_space import label_space
from clef.losses import description_name_loss, masked_bce_loss
from clef.model import build_model
from clef.prompts import load_prompt_set
from clef.run_config import OptimConfig, TrainableConfig, param_groups
from clef.stage2 import MethodConfig, Stage2Step, au_pos_weights
from tiny import SMALL_CNN, stage2_batch

PROMPTS = load_prompt_set("labels")
AUS = (1, 2, 4, 12)
CLASSES = ("happiness", "sadness", "surprise")


def _model(clef, task="au", text_blocks=None, **method) -> tuple[FineTuneModel, MethodConfig]:
    cfg = MethodConfig(task=task, **method)
    space = label_space(
        task, PROMPTS, aus=AUS if task == "au" else (), classes=CLASSES if task == "fer" else ()
    )
    model = build_finetune_model(clef, space, cfg, "labels", TrainableConfig(text_blocks=text_blocks))
    # eval mode: the text tower's dropout would make two passes differ (the step does not care).
    return model.eval(), cfg


def test_pos_weights_are_negatives_over_positives_capped():
    targets = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]])
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]], bool)
    # AU a: 1 pos, 2 neg -> 2; AU b: 1 pos, 3 neg -> 3; AU c: no positive -> cap.
    torch.testing.assert_close(au_pos_weights(targets, mask, cap=5.0), torch.tensor([2.0, 3.0, 5.0]))


def _prompts(texts, templates, choice):
    return [templates[int(k)].replace("{}", t) for t, k in zip(texts, choice, strict=True)]


def test_au_step_is_masked_bce_plus_weighted_description_loss(tiny_clip):
    model, cfg = _model(tiny_clip, description_weight=0.5)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    batch = stage2_batch()
    out = Stage2Step(cfg, None, torch.Generator().manual_seed(3))(model, batch)

    # By hand: the same draws (names first, then descriptions), separate text passes.
    g = torch.Generator().manual_seed(3)
    names_choice = torch.randint(len(PROMPTS.name_templates), (len(AUS),), generator=g)
    desc_choice = torch.randint(len(PROMPTS.description_templates), (len(AUS),), generator=g)
    clef = model.clef
    names = clef.encode_text(clef.tokenize(_prompts(model.space.names, PROMPTS.name_templates, names_choice)))
    descs = clef.encode_text(
        clef.tokenize(_prompts(model.space.descriptions, PROMPTS.description_templates, desc_choice))
    )
    v = clef.encode_image(clef.preprocess.normalize(batch["image"].float() / 255))
    logits = clef.scale() * v @ names.T + model.head.bias
    bce = masked_bce_loss(logits, batch["au"], batch["au_mask"])
    dn = description_name_loss(descs, names, clef.scale())
    assert out["loss_task"].item() == pytest.approx(bce.item(), rel=1e-4)
    assert out["loss_dn"].item() == pytest.approx(dn.item(), rel=1e-4)
    assert out["loss"].item() == pytest.approx(bce.item() + 0.5 * dn.item(), rel=1e-4)


def test_fer_step_is_cross_entropy_over_name_prototypes(tiny_clip):
    model, cfg = _model(tiny_clip, task="fer", description_loss=False)
    batch = stage2_batch()
    out = Stage2Step(cfg, None, torch.Generator().manual_seed(5))(model, batch)
    g = torch.Generator().manual_seed(5)
    choice = torch.randint(len(PROMPTS.name_templates), (len(CLASSES),), generator=g)
    clef = model.clef
    names = clef.encode_text(clef.tokenize(_prompts(model.space.names, PROMPTS.name_templates, choice)))
    v = clef.encode_image(clef.preprocess.normalize(batch["image"].float() / 255))
    expected = F.cross_entropy(clef.scale() * v @ names.T, batch["expression"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert out["loss_dn"].item() == 0.0


def test_descriptions_head_uses_descriptions_as_prototypes(tiny_clip):
    model, cfg = _model(tiny_clip, task="fer", head="descriptions", description_loss=False)
    batch = stage2_batch()
    out = Stage2Step(cfg, None, torch.Generator().manual_seed(2))(model, batch)
    g = torch.Generator().manual_seed(2)
    choice = torch.randint(len(PROMPTS.description_templates), (len(CLASSES),), generator=g)
    clef = model.clef
    descs = clef.encode_text(
        clef.tokenize(_prompts(model.space.descriptions, PROMPTS.description_templates, choice))
    )
    v = clef.encode_image(clef.preprocess.normalize(batch["image"].float() / 255))
    expected = F.cross_entropy(clef.scale() * v @ descs.T, batch["expression"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_linear_baseline_uses_no_text(tiny_clip):
    model, cfg = _model(tiny_clip, head="linear", description_loss=False)
    batch = stage2_batch()
    out = Stage2Step(cfg, None, torch.Generator())(model, batch)
    v = model.clef.encode_image(model.clef.preprocess.normalize(batch["image"].float() / 255))
    expected = masked_bce_loss(model.head(v), batch["au"], batch["au_mask"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    groups = param_groups(model.clef, OptimConfig(), model.head)
    assert set(groups) == {"image", "other", "head"}  # text tower and logit scale are frozen
    assert model.clef.text_tower.is_frozen and not model.clef.logit_scale.requires_grad


def test_prompt_pair_step_and_prototypes(tiny_clip):
    model, cfg = _model(tiny_clip, au_prompt="pair", description_loss=False)
    out = Stage2Step(cfg, None, torch.Generator())(model, stage2_batch())
    assert torch.isfinite(out["loss"])
    assert model.prototypes().shape == (2, len(AUS), model.clef.embed_dim)


def test_every_trainable_parameter_gets_a_gradient():
    # The offline default (small CNN + MiniLM architecture), last text block trainable.
    cfg = MethodConfig()
    clef = build_model("offline", SMALL_CNN, pretrained=False)
    model = build_finetune_model(
        clef, label_space("au", PROMPTS, aus=AUS), cfg, "labels", TrainableConfig(text_blocks=1)
    )
    Stage2Step(cfg, BatchAugment(AugmentConfig(size=64)), torch.Generator())(model, stage2_batch(size=64))[
        "loss"
    ].backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable), [
        n for n, p in trainable if p.grad is None
    ]
    frozen = [p for p in model.clef.text_tower.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)


def test_frozen_text_tower_draws_match_the_trainable_path(new_tiny_clip):
    trainable, _ = _model(new_tiny_clip())
    locked, _ = _model(new_tiny_clip(), text_blocks=0)
    a = trainable.text_embeddings(["names", "descriptions"], torch.Generator().manual_seed(9))
    b = locked.text_embeddings(["names", "descriptions"], torch.Generator().manual_seed(9))
    for kind in a:
        torch.testing.assert_close(a[kind], b[kind], atol=1e-5, rtol=1e-4)
    assert not b["names"].requires_grad


def test_method_config_rejects_inconsistent_switches():
    with pytest.raises(UserError, match="description_loss"):
        MethodConfig(head="linear", description_loss=True).validate()
    with pytest.raises(UserError, match="pair"):
        MethodConfig(task="fer", au_prompt="pair", description_loss=False).validate()
    # Overrides apply one at a time: an intermediate inconsistent state must load.
    cfg = load_config(FinetuneConfig, None, ["method.head=linear", "method.description_loss=false"])
    cfg.method.validate()


def test_description_loss_trains_nothing_when_the_text_tower_is_locked(tiny_clip):
    model, cfg = _model(tiny_clip, text_blocks=0)
    out = Stage2Step(cfg, None, torch.Generator().manual_seed(0))(model, stage2_batch())
    assert out["loss_dn"].item() > 0
    out["loss"].backward()
    with_dn = model.clef.logit_scale.grad.clone()
    model.zero_grad()
    cfg_no = dataclasses.replace(cfg, description_loss=False)
    Stage2Step(cfg_no, None, torch.Generator().manual_seed(0))(model, stage2_batch())["loss"].backward()
    torch.testing.assert_close(model.clef.logit_scale.grad, with_dn)
