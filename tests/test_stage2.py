"""Stage 2: the masked BCE, the step's loss composition, heads in the step, locking and learning rates,
checkpoints, prediction, and every paper-ablation config building."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from clef.ablation import ABLATION_ROWS, PAPER_DATASETS, paper_config, paper_config_text, stage2_switches
from clef.augment import AugmentConfig, BatchAugment
from clef.checkpoint import save_checkpoint
from clef.config import load_config
from clef.engine import EngineConfig, train
from clef.errors import UserError
from clef.labels import BP4D_AUS
from clef.losses import description_name_loss, masked_bce_loss
from clef.model import build_model
from clef.prompts import load_prompt_set
from clef.stage2 import (
    FinetuneConfig,
    FineTuneModel,
    MethodConfig,
    OptimConfig,
    Stage2Step,
    au_pos_weights,
    build_backbone,
    build_finetune_model,
    evaluate_predictions,
    label_space,
    load_finetuned,
    predict,
    save_finetuned,
    stage2_param_groups,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(image_encoder="cnn", cnn_widths=(8, 16), cnn_depth=1, embed_dim=32)
TINY_CLIP = dict(
    image_size=32,
    patch_size=8,
    vision_width=32,
    vision_layers=2,
    vision_heads=2,
    vision_intermediate=64,
    text_width=32,
    text_layers=2,
    text_heads=2,
    text_intermediate=64,
    embed_dim=16,
)
PROMPTS = load_prompt_set("labels")
AUS = (1, 2, 4, 12)
CLASSES = ("happiness", "sadness", "surprise")


@pytest.fixture(scope="module")
def weights():
    """One random toy-size CLIP's weights (the real architecture and tokenizer, nothing read)."""
    torch.manual_seed(0)
    return build_model("clip-vit-b16", TINY_CLIP, pretrained=False).state_dict()


def _clef(weights):
    model = build_model("clip-vit-b16", TINY_CLIP, pretrained=False)
    model.load_state_dict(weights)
    return model


def _model(weights, task="au", **method) -> tuple[FineTuneModel, MethodConfig]:
    cfg = MethodConfig(task=task, **method)
    space = label_space(
        task, PROMPTS, aus=AUS if task == "au" else (), classes=CLASSES if task == "fer" else ()
    )
    # eval mode: the text tower's dropout would make two passes differ (the step does not care).
    return build_finetune_model(_clef(weights), space, cfg).eval(), cfg


def _batch(b=6, size=32, j=4, c=3):  # j = len(AUS), c = len(CLASSES)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(b, j, generator=g) > 0.2
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "au": (torch.rand(b, j, generator=g) > 0.6).float() * mask,
        "au_mask": mask,
        "expression": torch.arange(b) % c,
    }


# ------------------------------------------------------------------------------------ losses
def test_masked_bce_against_hand_computed_value():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, False], [True, True]])
    pos_weight = torch.tensor([2.0, 1.0])
    # Coded: (0,0) positive with weight 2; (1,0) negative; (1,1) positive with weight 1.
    expected = (2 * math.log(2) + math.log(1 + math.exp(-1)) + math.log(2)) / 3
    loss = masked_bce_loss(logits, targets, mask, pos_weight)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0  # an uncoded label gets no gradient
    # Without weights: plain BCE averaged over the three coded labels.
    assert masked_bce_loss(logits, targets, mask).item() == pytest.approx(
        (3 * math.log(2) + math.log(1 + math.exp(-1)) - math.log(2)) / 3, rel=1e-6
    )


def test_masked_bce_with_nothing_coded_is_zero_and_attached():
    logits = torch.randn(3, 2, requires_grad=True)
    loss = masked_bce_loss(logits, torch.ones(3, 2), torch.zeros(3, 2, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad


def test_pos_weights_are_negatives_over_positives_capped():
    targets = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]])
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]], bool)
    # AU a: 1 pos, 2 neg -> 2; AU b: 1 pos, 3 neg -> 3; AU c: no positive -> cap.
    torch.testing.assert_close(au_pos_weights(targets, mask, cap=5.0), torch.tensor([2.0, 3.0, 5.0]))


# ------------------------------------------------------------------------------ the step
def _prompts(texts, templates, choice):
    return [templates[int(k)].replace("{}", t) for t, k in zip(texts, choice, strict=True)]


def test_au_step_is_masked_bce_plus_weighted_description_loss(weights):
    model, cfg = _model(weights, description_weight=0.5)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    batch = _batch()
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


def test_fer_step_is_cross_entropy_over_name_prototypes(weights):
    model, cfg = _model(weights, task="fer", description_loss=False)
    batch = _batch()
    out = Stage2Step(cfg, None, torch.Generator().manual_seed(5))(model, batch)
    g = torch.Generator().manual_seed(5)
    choice = torch.randint(len(PROMPTS.name_templates), (len(CLASSES),), generator=g)
    clef = model.clef
    names = clef.encode_text(clef.tokenize(_prompts(model.space.names, PROMPTS.name_templates, choice)))
    v = clef.encode_image(clef.preprocess.normalize(batch["image"].float() / 255))
    expected = F.cross_entropy(clef.scale() * v @ names.T, batch["expression"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert out["loss_dn"].item() == 0.0


def test_descriptions_head_uses_descriptions_as_prototypes(weights):
    model, cfg = _model(weights, task="fer", head="descriptions", description_loss=False)
    batch = _batch()
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


def test_linear_baseline_uses_no_text(weights):
    model, cfg = _model(weights, head="linear", description_loss=False)
    batch = _batch()
    out = Stage2Step(cfg, None, torch.Generator())(model, batch)
    v = model.clef.encode_image(model.clef.preprocess.normalize(batch["image"].float() / 255))
    expected = masked_bce_loss(model.head(v), batch["au"], batch["au_mask"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    groups = stage2_param_groups(model, OptimConfig())
    assert set(groups) == {"image", "other", "head"}  # text tower and logit scale are frozen
    assert model.clef.text_tower.is_frozen and not model.clef.logit_scale.requires_grad


def test_prompt_pair_step_and_prototypes(weights):
    model, cfg = _model(weights, au_prompt="pair", description_loss=False)
    out = Stage2Step(cfg, None, torch.Generator())(model, _batch())
    assert torch.isfinite(out["loss"])
    assert model.prototypes().shape == (2, len(AUS), model.clef.embed_dim)


def test_every_trainable_parameter_gets_a_gradient():
    # The offline default (small CNN + MiniLM architecture), last text block trainable.
    cfg = MethodConfig(text_trainable_blocks=1)
    clef = build_model("offline", SMALL, pretrained=False)
    model = build_finetune_model(clef, label_space("au", PROMPTS, aus=AUS), cfg)
    Stage2Step(cfg, BatchAugment(AugmentConfig(size=64)), torch.Generator())(model, _batch(size=64))[
        "loss"
    ].backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable), [
        n for n, p in trainable if p.grad is None
    ]
    frozen = [p for p in model.clef.text_tower.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)


def test_frozen_text_tower_draws_match_the_trainable_path(weights):
    trainable, _ = _model(weights)
    locked, _ = _model(weights, text_tower="lock")
    a = trainable.sampled_embeddings(["names", "descriptions"], torch.Generator().manual_seed(9))
    b = locked.sampled_embeddings(["names", "descriptions"], torch.Generator().manual_seed(9))
    for kind in a:
        torch.testing.assert_close(a[kind], b[kind], atol=1e-5, rtol=1e-4)
    assert not b["names"].requires_grad


def test_text_tower_gets_the_small_learning_rate_or_stays_frozen(weights, tmp_path):
    model, cfg = _model(weights)
    groups = stage2_param_groups(model, OptimConfig(lr_image=1e-3, lr_text=1e-6, lr_other=1e-3, lr_head=1e-2))
    text_ids = {id(p) for p in model.clef.text_tower.parameters()} - {
        id(p) for p in model.clef.text_tower.projection_parameters()
    }
    assert groups["text"].lr == 1e-6 and {id(p) for p in groups["text"].params} == text_ids
    assert groups["image"].lr == 1e-3 and groups["head"].lr == 1e-2

    locked, cfg = _model(weights, text_tower="lock")
    groups = stage2_param_groups(locked, OptimConfig())
    assert "text" not in groups
    before = {k: v.clone() for k, v in locked.clef.text_tower.state_dict().items()}
    image_before = next(locked.clef.image_tower.parameters()).detach().clone()
    loader = [_batch()] * 3
    train(
        locked,
        Stage2Step(cfg, None, torch.Generator()),
        groups,
        loader,
        EngineConfig(steps=3, warmup_steps=0, progress=False),
        tmp_path,
    )
    after = locked.clef.text_tower.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(image_before, next(locked.clef.image_tower.parameters()))


def test_method_config_rejects_inconsistent_switches():
    with pytest.raises(UserError, match="description_loss"):
        MethodConfig(head="linear", description_loss=True).validate()
    with pytest.raises(UserError, match="pair"):
        MethodConfig(task="fer", au_prompt="pair", description_loss=False).validate()
    # Overrides apply one at a time: an intermediate inconsistent state must load.
    cfg = load_config(FinetuneConfig, None, ["method.head=linear", "method.description_loss=false"])
    cfg.method.validate()


# --------------------------------------------------------------------- checkpoints, prediction
def _records(tmp_path, n=5, size=40):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        rows.append(
            {
                "path": str(path),
                "expression": CLASSES[i % 3],
                **{f"AU{a}": float((i + a) % 2) for a in AUS},
            }
        )
    table = pd.DataFrame(rows)
    table.loc[0, "AU1"] = np.nan
    return table


@pytest.mark.parametrize("task", ["au", "fer"])
def test_checkpoint_round_trip_predicts_the_same(weights, tmp_path, task):
    model, _ = _model(weights, task=task)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.3)
    records = _records(tmp_path)
    before = predict(model, records, batch_size=2, progress=False)
    save_finetuned(tmp_path / "ft", model, training_config=FinetuneConfig(), metrics={"x": 1.0})
    loaded, meta = load_finetuned(tmp_path / "ft")
    after = predict(loaded, records, batch_size=3, progress=False)
    np.testing.assert_allclose(before.probabilities, after.probabilities, atol=1e-5)
    assert meta["labels"] == list(model.space.labels) and meta["task"] == task
    assert (meta["thresholds"] is None) == (task == "fer")
    result = evaluate_predictions(after, records)
    if task == "au":
        assert result.n_coded == [4, 5, 5, 5]  # the uncoded AU1 of row 0 is excluded
    else:
        assert sum(map(sum, result.confusion)) == len(records)


def test_a_stage1_checkpoint_is_not_a_finetuned_one(weights, tmp_path):
    save_checkpoint(tmp_path / "s1", _clef(weights), task="pretrain")
    with pytest.raises(UserError, match="stage-2"):
        load_finetuned(tmp_path / "s1")


# ----------------------------------------------------------------------- the paper's configs
PAPER = REPO / "configs" / "paper"


def test_paper_config_files_match_the_ablation_rows():
    files = sorted(PAPER.glob("*/*.yaml"))
    assert len(files) == len(ABLATION_ROWS) * len(PAPER_DATASETS) == 26
    for dataset in PAPER_DATASETS:
        for row in ABLATION_ROWS:
            path = PAPER / dataset / f"{row.key}.yaml"
            assert path.read_text() == paper_config_text(row, dataset), f"{path} is stale"


@pytest.fixture(scope="module")
def tiny_stage1(tmp_path_factory):
    """A stage-1-like checkpoint of the real CLIP architecture at toy size (random weights)."""
    path = tmp_path_factory.mktemp("stage1") / "stage1"
    save_checkpoint(path, build_model("clip-vit-b16", TINY_CLIP, pretrained=False), task="pretrain")
    return path


@pytest.mark.parametrize("dataset", list(PAPER_DATASETS))
@pytest.mark.parametrize("row", ABLATION_ROWS, ids=lambda r: r.key)
def test_every_paper_config_parses_and_builds(row, dataset, tiny_stage1):
    cfg = load_config(FinetuneConfig, PAPER / dataset / f"{row.key}.yaml")
    switches = stage2_switches(row)
    assert cfg.method.head == switches["head"]
    assert cfg.method.description_loss == switches["description_loss"]
    assert (cfg.init.checkpoint is not None) == (row.model == "CLEF")
    if row.model == "CLEF":
        assert ("pa_pi" in cfg.init.checkpoint) == row.pa
        assert (cfg.data.fold is not None) == ("{fold}" in cfg.init.checkpoint)
        # Same structure, a toy checkpoint in place of the real stage-1 run.
        init = dataclasses.replace(cfg.init, checkpoint=str(tiny_stage1))
    else:
        assert cfg.init.backbone_config["weights"].endswith(".pth") == (row.model == "FaRL")
        init = dataclasses.replace(cfg.init, backbone_config=TINY_CLIP, pretrained=False)
    clef, source = build_backbone(init, cfg.data.fold)
    task = cfg.method.task
    space = label_space(
        task, PROMPTS, aus=BP4D_AUS if task == "au" else (), classes=CLASSES if task == "fer" else ()
    )
    model = build_finetune_model(clef, space, cfg.method)
    batch = _batch(b=2, size=32, j=len(space), c=len(space))
    out = Stage2Step(cfg.method, None, torch.Generator())(model, batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and source["backbone"] == "clip-vit-b16"
    groups = set(stage2_param_groups(model, cfg.optim))
    assert "image" in groups and ("text" in groups) == (row.n or row.d)
    assert ("head" in groups) == (task == "au" or cfg.method.head == "linear")  # FER text head: no weights


def test_world_configs_parse():
    for name in ("world_bp4d_au", "world_rafdb_fer"):
        cfg = load_config(FinetuneConfig, REPO / "configs" / "finetune" / f"{name}.yaml")
        assert cfg.method.head == "names" and cfg.method.description_loss
        assert cfg.init.checkpoint is None and cfg.init.backbone == "offline"


def test_paper_config_maps_switches():
    row = next(r for r in ABLATION_ROWS if r.key == "12_clef_pa_pi_id")
    assert paper_config(row, "rafdb")["method"]["head"] == "descriptions"
    assert stage2_switches(ABLATION_ROWS[0]) == {"head": "linear", "description_loss": False}


def test_description_loss_trains_nothing_when_the_text_tower_is_locked(weights):
    model, cfg = _model(weights, text_tower="lock")
    out = Stage2Step(cfg, None, torch.Generator().manual_seed(0))(model, _batch())
    assert out["loss_dn"].item() > 0
    out["loss"].backward()
    with_dn = model.clef.logit_scale.grad.clone()
    model.zero_grad()
    cfg_no = dataclasses.replace(cfg, description_loss=False)
    Stage2Step(cfg_no, None, torch.Generator().manual_seed(0))(model, _batch())["loss"].backward()
    torch.testing.assert_close(model.clef.logit_scale.grad, with_dn)
