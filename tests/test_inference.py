"""Inference: embeddings in record order, a model's predictions over its own label space, and
zero-shot scores of arbitrary texts equal to the cosine formula."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clef.inference import embed_images, predict_texts
from clef.model import build_text_classifier


@pytest.fixture
def records(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return pd.DataFrame({"path": paths})


def test_embeddings_keep_record_order_and_unit_norm(tiny_clip, records):
    a = embed_images(tiny_clip, records, batch_size=2, progress=False)
    b = embed_images(tiny_clip, records.iloc[::-1].reset_index(drop=True), batch_size=5, progress=False)
    assert a.shape == (5, tiny_clip.embed_dim)
    torch.testing.assert_close(a, b.flip(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(5), atol=1e-4, rtol=0)


@pytest.mark.parametrize("multi_label", [False, True])
def test_text_scores_are_scale_times_cosine(tiny_clip, records, multi_label):
    texts = ["a wide smile", "raised brows", "a frown"]
    templates = ["a photo of a person with {}.", "a face with {}."]
    bias = torch.tensor([0.5, -0.5, 0.0])
    pred = predict_texts(
        tiny_clip, records, ["smile", "brows", "frown"], texts, templates, multi_label, bias, progress=False
    )
    with torch.no_grad():
        v = embed_images(tiny_clip, records, progress=False)
        t = build_text_classifier(tiny_clip, texts, templates)
        logits = tiny_clip.scale() * v @ t.T + bias
    np.testing.assert_allclose(pred.logits, logits.numpy(), atol=1e-5)
    expected = torch.sigmoid(logits) if multi_label else logits.softmax(-1)
    np.testing.assert_allclose(pred.probabilities, expected.numpy(), atol=1e-6)
    assert pred.labels == ("smile", "brows", "frown") and pred.space.multi_label == multi_label
