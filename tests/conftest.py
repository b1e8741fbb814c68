"""Fixtures shared by the whole suite (the tiny configs they use are in ``tests/tiny.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tiny import CONTRAST_FINETUNE, TINY_CLIP, TINY_FINETUNE, TINY_WORLD


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


def _finetune(run_dir: Path, overrides: list[str]) -> Path:
    from clef.config import load_config
    from clef.finetune import FinetuneConfig, finetune

    cfg = load_config(FinetuneConfig, None, [f"run_dir={run_dir}", "device=cpu", *overrides])
    return finetune(cfg, progress=False).checkpoint


@pytest.fixture(scope="session")
def tiny_au_model(tiny_world, tmp_path_factory) -> Path:
    """``RUN_DIR/model`` of a toy-size CLIP fine-tuned for 2 steps on the tiny world's BP4D-layout lab
    data (fold 1, the 12 BP4D AUs): wiring only, its scores mean nothing."""
    return _finetune(
        tmp_path_factory.mktemp("au_model"),
        [f"data.root={tiny_world / 'bp4d'}", "method.task=au", *TINY_FINETUNE],
    )


@pytest.fixture(scope="session")
def tiny_fer_model(tiny_world, tmp_path_factory) -> Path:
    """As :func:`tiny_au_model`, for FER on the tiny world's RAF-DB layout (official split, 7 classes)."""
    return _finetune(
        tmp_path_factory.mktemp("fer_model"),
        [
            "data.dataset=rafdb",
            f"data.root={tiny_world / 'rafdb'}",
            "data.fold=null",
            "method.task=fer",
            *TINY_FINETUNE,
        ],
    )


@pytest.fixture(scope="session")
def contrast_model(tmp_path_factory) -> Path:
    """``RUN_DIR/model`` of a model that has learnt where AU12 and the brow AUs are: the offline backbone
    (CNN 16-32-64 at 32 px, MiniLM text tower frozen) fine-tuned for 700 steps (25-40 s on 2 shared cores)
    on the contrast set of 300 identities (:mod:`clef.synth.contrast`: AU12 crossed with raised /
    lowered brows). A few dozen steps on the tiny world do not teach any AU (its lab frames hold a
    handful of AU12 positives; F1 stays 0 and Grad-CAM maps sit on the image border), so a relevance
    check needs this."""
    from clef.synth.contrast import write_contrast_set

    root = tmp_path_factory.mktemp("contrast")
    train = write_contrast_set(root / "train", identities=300, size=32, seed=0)
    test = write_contrast_set(root / "test", identities=8, size=32, seed=1)
    from clef.config import load_config
    from clef.finetune import FinetuneConfig, finetune

    cfg = load_config(FinetuneConfig, None, [f"run_dir={root / 'run'}", "device=cpu", *CONTRAST_FINETUNE])
    return finetune(cfg, train_records=train, test_records=test, progress=False).checkpoint
