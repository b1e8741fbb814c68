"""Fixtures shared by the whole suite (the tiny configs they use are in ``tests/tiny.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tiny import TINY_CLIP, TINY_WORLD


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The built-in world at :data:`tiny.TINY_WORLD`, lab (BP4D layout), wild (RAF-DB) and DISFA
    domains, rendered once per test session. Tests must not write into it."""
    from clef.synth.export import write_world

    out = tmp_path_factory.mktemp("tiny_world")
    write_world(TINY_WORLD, out, domains=("lab", "wild", "disfa"), workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def new_tiny_clip():
    """A factory of toy-size CLIP dual encoders (the real architecture and tokenizer, nothing read or
    downloaded), each a new object with the same random weights."""
    from clef.model import build_model

    torch.manual_seed(0)
    weights = build_model("clip-vit-b16", TINY_CLIP, pretrained=False).state_dict()

    def make():
        model = build_model("clip-vit-b16", TINY_CLIP, pretrained=False)
        model.load_state_dict(weights)
        return model

    return make


@pytest.fixture
def tiny_clip(new_tiny_clip):
    """A fresh toy-size CLIP dual encoder (see :func:`new_tiny_clip`)."""
    return new_tiny_clip()
