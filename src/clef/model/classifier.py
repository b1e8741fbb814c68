"""Text classifiers: one embedding per class from its text and a set of prompt templates.

Each class text is put into every template, embedded, averaged over templates and renormalised
(CLIP's prompt ensembling; docs/method.md §4 "label names N"). The result (C, D) scores images by
``scale · image_embeddings @ classifier.T``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from clef.errors import UserError
from clef.model.model import ClefModel


def fill_templates(texts: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class × template prompts, class-major: ``[t.format(x) for x in texts for t in templates]``.

    Templates use ``{}`` once; ``str.replace`` is used (not ``format``) so braces inside texts are safe.
    """
    for template in templates:
        if template.count("{}") != 1:
            raise UserError(f"prompt template {template!r} must contain '{{}}' exactly once")
    return [template.replace("{}", text) for text in texts for template in templates]


def build_text_classifier(
    model: ClefModel, texts: Sequence[str], templates: Sequence[str] = ("{}",), batch_size: int = 256
) -> Tensor:
    """(C, D) unit-norm class embeddings: mean over templates of the normalised text embeddings.

    Args:
        model: a :class:`ClefModel`.
        texts: C class texts (names or descriptions), already readable ("lip corner puller").
        templates: T templates, each with one ``{}``.
        batch_size: texts per forward pass.

    The prompts go through :meth:`ClefModel.embed_texts`: a frozen text tower's embeddings are cached
    there; a trainable one's carry gradients to it (fine-tuning, docs/method.md §4).
    """
    if not texts:
        raise UserError("a text classifier needs at least one class text")
    emb = model.embed_texts(fill_templates(texts, templates), batch_size)
    return torch.nn.functional.normalize(emb.view(len(texts), len(templates), -1).mean(dim=1), dim=-1)
