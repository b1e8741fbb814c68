"""The from-scratch image towers' implementation options."""

from __future__ import annotations

import pytest
import torch

from clef.errors import UserError
from clef.model.image_encoders import SmallCNN
from clef.model.offline import OfflineConfig, build_image_tower


def test_cnn_chunks_give_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    whole = SmallCNN(widths=(8, 16), depth=1, embed_dim=12)
    chunked = SmallCNN(widths=(8, 16), depth=1, embed_dim=12, chunk=3)
    chunked.load_state_dict(whole.state_dict())
    x = torch.randn(7, 3, 16, 16)  # 7 images in chunks of 3, 3, 1
    target = torch.randn(7, 12)
    results = []
    for model in (whole, chunked):
        out = model(x)
        ((out - target) ** 2).sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (out_w, grads_w), (out_c, grads_c) = results
    assert out_c.shape == (7, 12)
    assert torch.allclose(out_c, out_w, rtol=1e-5, atol=1e-6)
    for name, grad in grads_w.items():
        assert torch.allclose(grads_c[name], grad, rtol=1e-4, atol=1e-4), name  # sums of ~1 terms


def test_offline_cnn_chunks_by_default_and_rejects_a_negative_chunk():
    assert build_image_tower(OfflineConfig(image_encoder="cnn")).chunk == 32
    assert build_image_tower(OfflineConfig(image_encoder="cnn", cnn_chunk=0)).chunk == 0
    with pytest.raises(UserError, match="cnn_chunk must be >= 0"):
        OfflineConfig(image_encoder="cnn", cnn_chunk=-1)
