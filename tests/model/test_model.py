"""Wiring of the dual encoder: gradients reach every trainable parameter, locked towers stay put."""

from __future__ import annotations

import math

import pytest
import torch

from clef.errors import UserError
from clef.model import MAX_SCALE, build_model

TEXTS = ["a photo of a person with happiness.", "a face showing raised brows.", "jaw drop"]


def _batch(model, n: int = 4) -> torch.Tensor:
    size = model.preprocess.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _loss(model) -> torch.Tensor:
    img = model.encode_image(_batch(model))
    txt = model.encode_text(model.tokenize(TEXTS))
    logits = model.scale() * img @ txt.T  # (4, 3)
    return torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0]))


def test_embeddings_are_unit_norm_with_contract_shapes(backbone_case):
    name, cfg = backbone_case
    model = build_model(name, cfg)
    img = model.encode_image(_batch(model, 3))
    txt = model.encode_text(model.tokenize(TEXTS))
    assert img.shape == (3, model.embed_dim) and txt.shape == (len(TEXTS), model.embed_dim)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(len(TEXTS)))


def test_every_trainable_parameter_receives_a_gradient(backbone_case):
    name, cfg = backbone_case
    model = build_model(name, cfg)
    _loss(model).backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert missing == []


@pytest.mark.parametrize("tower", ["image", "text"])
def test_locked_tower_does_not_change_after_an_optimiser_step(backbone_case, tower):
    name, cfg = backbone_case
    model = build_model(name, cfg)
    getattr(model, f"lock_{tower}_tower")()
    locked = getattr(model, f"{tower}_tower")
    other = model.text_tower if tower == "image" else model.image_tower
    before = {k: v.clone() for k, v in locked.state_dict().items()}
    other_before = {k: v.clone() for k, v in other.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    _loss(model).backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in locked.state_dict().items())
    assert any(not torch.equal(other_before[k], v) for k, v in other.state_dict().items())
    assert not locked.training and other.training  # a fully locked tower stays in eval mode


def test_partial_lock_trains_only_the_last_blocks_and_head():
    model = build_model("offline", {"image_encoder": "vit", "vit_width": 32, "vit_depth": 3, "vit_heads": 2})
    model.lock_image_tower(unlocked_last_k=1)
    tower = model.image_tower
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("layers.2.", "norm.", "projection.")) for n in trainable)
    assert any(n.startswith("layers.2.") for n in trainable) and "projection.weight" in trainable
    model.unlock_image_tower()
    assert all(p.requires_grad for p in tower.parameters())
    with pytest.raises(UserError, match="between 0 and 3"):
        model.lock_image_tower(unlocked_last_k=4)


def test_param_groups_partition_the_trainable_parameters():
    model = build_model("offline", {"image_encoder": "cnn", "cnn_widths": (8, 16)})
    model.lock_text_tower(unlocked_last_k=2)
    groups = model.param_groups()
    assert set(groups) == {"image", "text", "other"}
    ids = [id(p) for ps in groups.values() for p in ps]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    other = {id(p) for p in groups["other"]}
    assert id(model.logit_scale) in other
    assert (
        id(model.image_tower.projection.weight) in other and id(model.text_tower.projection.weight) in other
    )
    assert len(groups["text"]) > 0 and all(id(p) not in other for p in groups["text"])


def test_scale_starts_at_clip_init_and_is_clamped():
    model = build_model("offline", {"image_encoder": "cnn", "cnn_widths": (8,)})
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert model.scale().item() == pytest.approx(MAX_SCALE)
    assert model.preprocess.image_size == 64 and len(model.preprocess.mean) == 3


def test_tokenize_rejects_a_bare_string():
    model = build_model("offline", {"image_encoder": "cnn", "cnn_widths": (8,)})
    with pytest.raises(TypeError):
        model.tokenize("one string")
