"""Stage-2 heads against hand-computed logits."""

import math

import torch

from clef.heads import LinearHead, PromptPairAUHead, TextAUHead, TextFERHead


def _unit(*rows):
    t = torch.tensor(rows, dtype=torch.float32)
    return t / t.norm(dim=1, keepdim=True)


def test_fer_head_is_scaled_cosine():
    image = _unit([1.0, 0.0], [0.0, 1.0])
    text = _unit([1.0, 0.0], [1.0, 1.0], [-1.0, 0.0])
    logits = TextFERHead()(image, text, torch.tensor(10.0))
    expected = torch.tensor([[10.0, 10 / math.sqrt(2), -10.0], [0.0, 10 / math.sqrt(2), 0.0]])
    torch.testing.assert_close(logits, expected)


def test_au_head_adds_per_au_bias():
    head = TextAUHead(2)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.5, -1.0]))
    image = _unit([3.0, 4.0])
    text = _unit([1.0, 0.0], [0.0, 1.0])
    logits = head(image, text, torch.tensor(2.0))
    torch.testing.assert_close(logits, torch.tensor([[2 * 0.6 + 0.5, 2 * 0.8 - 1.0]]))


def test_prompt_pair_equals_two_way_softmax():
    image = _unit([1.0, 2.0], [-2.0, 1.0])
    text = torch.stack([_unit([1.0, 0.0], [0.0, 1.0]), _unit([0.0, 1.0], [1.0, 1.0])])
    scale = torch.tensor(7.0)
    logit = PromptPairAUHead()(image, text, scale)
    pair = torch.stack([image @ text[0].t(), image @ text[1].t()], dim=-1) * scale
    torch.testing.assert_close(torch.sigmoid(logit), pair.softmax(dim=-1)[..., 1])


def test_linear_head_shapes_and_gradients():
    head = LinearHead(4, 3)
    out = head(torch.randn(5, 4))
    out.sum().backward()
    assert out.shape == (5, 3) and head.linear.weight.grad is not None
