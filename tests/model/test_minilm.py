"""The MiniLM text tower with a frozen prefix: the embeddings and leading layers run once per text
(cached), the result equals the full forward pass, and only the trainable top learns."""

from __future__ import annotations

import pytest
import torch

from clef.model import build_model
from tiny import SMALL_CNN

TEXTS = [
    "a photo of a person with lip corner puller.",
    "a face with raised brows",
    "happiness",
    "the inner corners of the brows are pulled up and together, wrinkling the middle of the forehead",
]


@pytest.fixture(scope="module")
def model():
    return build_model("offline", SMALL_CNN)  # the packaged MiniLM weights


def _full(tower, tokens):
    """The tower's output computed the plain way (every layer, no cache)."""
    hidden = tower.encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    weights = tokens["attention_mask"].unsqueeze(-1).to(hidden.last_hidden_state.dtype)
    pooled = (hidden.last_hidden_state * weights).sum(1) / weights.sum(1)
    return tower.projection(pooled)


@pytest.mark.parametrize("trainable_blocks", [1, 3, 0])
def test_the_cached_prefix_path_equals_the_full_forward(model, trainable_blocks):
    model.lock_text_tower(trainable_blocks)
    model.eval()
    tower = model.text_tower
    assert tower.frozen_layers() == len(tower.blocks()) - trainable_blocks
    tokens = model.tokenize(TEXTS)
    with torch.no_grad():
        expected = _full(tower, tokens)
        first = tower(tokens)
        shuffled = tower(model.tokenize(TEXTS[::-1]))  # other padding, other batch order: same rows
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shuffled.flip(0), expected, atol=1e-5, rtol=1e-5)
    model.unlock_text_tower()


def test_the_prefix_runs_once_per_text_and_only_the_top_learns(model):
    model.lock_text_tower(1)
    model.train()
    tower = model.text_tower
    assert not tower.encoder.embeddings.training and not tower.blocks()[0].training  # frozen: eval mode
    assert tower.blocks()[-1].training
    calls = []
    handle = tower.encoder.embeddings.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        out = tower(model.tokenize(TEXTS))
        again = tower(model.tokenize(TEXTS[:2] + ["a new text"]))
    finally:
        handle.remove()
    assert calls == [len(TEXTS), 1]  # the second call embeds only the text it has not seen
    (out.sum() + again.sum()).backward()
    top = tower.blocks()[-1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in top.parameters())
    assert all(p.grad is None for layer in tower.blocks()[:-1] for p in layer.parameters())
    with torch.no_grad():  # a changed frozen weight empties the cache: the prefix is recomputed
        tower.encoder.embeddings.word_embeddings.weight.mul_(1.0001)
    calls.clear()
    handle = tower.encoder.embeddings.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        tower(model.tokenize(TEXTS[:1]))
    finally:
        handle.remove()
    assert calls == [1]
    model.zero_grad()
    model.unlock_text_tower()
