"""Stage-2 scoring heads: labels scored by image-text similarity (docs/method.md §4), and the linear baseline.

All heads take unit-norm image embeddings ``image`` (B, D) and, for the text heads, unit-norm label
text embeddings (C, D) computed by the caller (names, or descriptions for "D without N"), plus the
model's clamped logit scale. They return logits; losses live in :mod:`clef.losses`.
"""

from __future__ import annotations

import torch
from torch import nn


class TextFERHead(nn.Module):
    """FER: logits_c = scale * cos(v, t_c); softmax over the C class texts (L_IN for FER)."""

    def forward(self, image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scale * image @ text.t()  # (B, C)


class TextAUHead(nn.Module):
    """AU detection, one prompt per AU: logit_j = scale * cos(v, t_j) + b_j (independent sigmoids).

    The per-AU bias absorbs each AU's base rate, which a shared cosine scale cannot.
    """

    def __init__(self, n_aus: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_aus))

    def forward(self, image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scale * image @ text.t() + self.bias  # (B, J)


class PromptPairAUHead(nn.Module):
    """AU detection with a "with {AU}" / "without {AU}" prompt pair and a 2-way softmax per AU.

    ``text`` is (2, J, D): index 0 the "without" prompts, 1 the "with" prompts. The 2-way softmax
    probability of "with" equals sigmoid(scale * (cos_with - cos_without)), so the returned (B, J)
    logit plugs into the same BCE and 0.5 threshold as :class:`TextAUHead`.
    """

    def forward(self, image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        without, with_ = image @ text[0].t(), image @ text[1].t()
        return scale * (with_ - without)


class LinearHead(nn.Module):
    """The ablation's "I" row: image embedding -> linear classifier, no text (docs/method.md §2)."""

    def __init__(self, dim: int, n_outputs: int):
        super().__init__()
        self.linear = nn.Linear(dim, n_outputs)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.linear(image)
