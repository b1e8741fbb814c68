"""Text classifiers: one embedding per class from its text and a set of prompt templates.

Each class text is put into every template, embedded, averaged over templates and renormalised
(CLIP's prompt ensembling; method.md §4 "label names N"). The result (C, D) scores images by
``scale · image_embeddings @ classifier.T``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from clef.errors import UserError
from clef.model.model import ClefModel

# model -> {(texts, templates, device, dtype): (versions, embeddings)}; weak so models can be freed.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fill_templates(texts: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class × template prompts, class-major: ``[t.format(x) for x in texts for t in templates]``.

    Templates use ``{}`` once; ``str.replace`` is used (not ``format``) so braces inside texts are safe.
    """
    for template in templates:
        if template.count("{}") != 1:
            raise UserError(f"prompt template {template!r} must contain '{{}}' exactly once")
    return [template.replace("{}", text) for text in texts for template in templates]


def _text_versions(model: ClefModel) -> tuple[int, ...]:
    # In-place writes (optimiser steps, load_state_dict) bump a tensor's version counter, so a
    # cached classifier is recomputed whenever the text tower's weights could have changed.
    return tuple(p._version for p in model.text_tower.parameters())


def build_text_classifier(
    model: ClefModel,
    texts: Sequence[str],
    templates: Sequence[str] = ("{}",),
    cache: bool = True,
    batch_size: int = 256,
) -> Tensor:
    """(C, D) unit-norm class embeddings: mean over templates of the normalised text embeddings.

    Args:
        model: a :class:`ClefModel`.
        texts: C class texts (names or descriptions), already readable ("lip corner puller").
        templates: T templates, each with one ``{}``.
        cache: when the text tower is frozen (no trainable parameter), compute under ``no_grad`` and
            reuse the result for the same texts, templates, device and weights.
        batch_size: texts per forward pass.

    When the text tower is trainable the result carries gradients to it (fine-tuning, method.md §4).
    """
    if not texts:
        raise UserError("a text classifier needs at least one class text")
    frozen = model.text_tower.is_frozen
    device = model.logit_scale.device
    key = (tuple(texts), tuple(templates), str(device), model.logit_scale.dtype)
    if frozen and cache:
        hit = _CACHE.get(model, {}).get(key)
        if hit is not None and hit[0] == _text_versions(model):
            return hit[1]
    prompts = fill_templates(texts, templates)
    with torch.set_grad_enabled(not frozen and torch.is_grad_enabled()):
        parts = [
            model.encode_text(model.tokenize(prompts[i : i + batch_size]))
            for i in range(0, len(prompts), batch_size)
        ]
        emb = torch.cat(parts).view(len(texts), len(templates), -1).mean(dim=1)
        classifier = torch.nn.functional.normalize(emb, dim=-1)
    if frozen and cache:
        _CACHE.setdefault(model, {})[key] = (_text_versions(model), classifier)
    return classifier
