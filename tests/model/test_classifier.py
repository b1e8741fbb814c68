"""Text classifiers: class × template embeddings averaged and renormalised; a frozen tower's come from
the model's text-embedding cache (ClefModel.embed_texts)."""

from __future__ import annotations

import pytest
import torch

from clef.errors import UserError
from clef.model import build_model, build_text_classifier, fill_templates
from tiny import SMALL_CNN

CLASSES = ["happiness", "sadness", "a neutral expression"]
TEMPLATES = ["a photo of a person with {}.", "a face showing {}."]


@pytest.fixture(scope="module")
def model():
    return build_model("offline", SMALL_CNN).eval()


def test_classifier_is_the_renormalised_template_mean(model):
    clf = build_text_classifier(model, CLASSES, TEMPLATES)
    assert clf.shape == (3, model.embed_dim)
    with torch.no_grad():
        emb = model.encode_text(model.tokenize(fill_templates(CLASSES, TEMPLATES))).view(3, 2, -1)
    want = torch.nn.functional.normalize(emb.mean(1), dim=-1)
    torch.testing.assert_close(clf.detach(), want, rtol=0, atol=1e-6)
    assert fill_templates(["x"], TEMPLATES) == ["a photo of a person with x.", "a face showing x."]


def test_trainable_text_tower_gets_gradients_through_the_classifier(model):
    model.unlock_text_tower()
    clf = build_text_classifier(model, CLASSES, TEMPLATES)
    assert clf.requires_grad
    clf.sum().backward()
    assert model.text_tower.encoder.embeddings.word_embeddings.weight.grad is not None
    model.zero_grad()


def test_frozen_text_tower_is_cached_until_its_weights_change(model):
    model.lock_text_tower()
    first = build_text_classifier(model, CLASSES, TEMPLATES)
    assert not first.requires_grad
    assert torch.equal(build_text_classifier(model, CLASSES, TEMPLATES), first)
    torch.testing.assert_close(build_text_classifier(model, CLASSES[:2], TEMPLATES), first[:2])
    with torch.no_grad():
        model.text_tower.projection.weight.mul_(2.0).add_(0.1)  # an in-place change, e.g. a loaded state
    again = build_text_classifier(model, CLASSES, TEMPLATES)
    assert not torch.allclose(again, first)
    model.unlock_text_tower()


def test_template_without_placeholder_is_rejected(model):
    with pytest.raises(UserError, match="exactly once"):
        build_text_classifier(model, CLASSES, ["a photo of a person"])
