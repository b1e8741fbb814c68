"""The transformer towers' attention_forward: the same output as forward, attention probabilities that
are the ones the layer used (rows sum to 1, gradients defined), the pooling each tower applies; and
the tokenizers' token names."""

from __future__ import annotations

import pytest
import torch

from clef.model import build_model
from tiny import SMALL_CNN, SMALL_VIT, TINY_CLIP

TEXTS = ["a photo of a person with lip corner puller.", "a frown"]


@pytest.fixture(scope="module", params=["offline-vit", "clip-tiny"])
def model(request):
    torch.manual_seed(0)
    if request.param == "offline-vit":
        return build_model("offline", SMALL_VIT).eval()
    return build_model("clip-vit-b16", TINY_CLIP, pretrained=False).eval()


def test_image_attention_forward_matches_forward(model):
    tower = model.image_tower
    size = model.preprocess.image_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = tower(x)
    out, attentions, pooling = tower.attention_forward(x)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-4)
    assert tower.has_attention and len(attentions) == len(tower.blocks())
    n = 1 + (size // (8 if model.backbone == "offline" else TINY_CLIP["patch_size"])) ** 2
    for a in attentions:
        assert a.shape[0] == 2 and a.shape[-2:] == (n, n)
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)), atol=1e-5, rtol=0)
    assert (pooling[:, 0] == 1).all() and pooling.sum() == 2  # the class token
    grads = torch.autograd.grad(out.sum(), attentions)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_text_attention_forward_matches_forward_and_pools_like_it(model):
    tower = model.text_tower
    tokens = model.tokenize(TEXTS)
    with torch.no_grad():
        plain = tower(tokens)
    out, attentions, pooling = tower.attention_forward(tokens)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-4)
    assert len(attentions) == len(tower.blocks()) and attentions[0].shape[-1] == tokens["input_ids"].shape[1]
    mask = tokens["attention_mask"].float()
    if model.backbone == "offline":  # MiniLM: masked mean
        torch.testing.assert_close(pooling, mask / mask.sum(1, keepdim=True))
    else:  # CLIP: the end-of-text token, the last real token of each text
        last = mask.sum(1).long() - 1
        assert pooling.sum(1).tolist() == [1.0, 1.0] and pooling[torch.arange(2), last].tolist() == [1.0, 1.0]
    # Eager attention was switched on for the recording only.
    config = tower.encoder.config if model.backbone == "offline" else tower.text_model.config
    assert config._attn_implementation != "eager"


def test_the_explicit_vit_attention_equals_the_fused_one():
    torch.manual_seed(0)
    tower = build_model("offline", SMALL_VIT).image_tower.eval()
    block = tower.blocks()[0]
    x = torch.randn(3, 65, SMALL_VIT["vit_width"])
    fused = block(x)
    explicit, probabilities = block.forward_with_probabilities(x)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-4)
    assert probabilities.shape == (3, SMALL_VIT["vit_heads"], 65, 65)


def test_cnn_towers_have_no_attention():
    tower = build_model("offline", SMALL_CNN).image_tower
    assert not tower.has_attention
    with pytest.raises(NotImplementedError):
        tower.attention_forward(torch.zeros(1, 3, 64, 64))


def test_token_names_and_markers(model):
    ids = model.tokenize(TEXTS[:1])["input_ids"][0].tolist()
    names = model.token_strings(ids)
    special = model.special_token_ids()
    assert len(names) == len(ids) and {"lip", "corner"} <= set(names)
    assert ids[0] in special and ids[-1] in special and not special & set(ids[1:-1])
