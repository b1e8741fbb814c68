"""Inference: image embeddings, a fine-tuned model's predictions, and scores against any label texts.

Gradient-free and batched; nothing about training is imported. Records are a record table
(:mod:`clef.data.records`: at least a ``path`` column); images are decoded by
:class:`clef.data.dataset.ImageRecords` and normalised as the model's ``preprocess`` says, with no
augmentation.

* :func:`embed_images` -> (N, D) unit-norm image embeddings;
* :func:`predict` -> a fine-tuned model's logits and probabilities over its own label space;
* :func:`predict_texts` -> zero-shot scores of arbitrary label texts: logit = scale · cos (+ bias).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from clef.augment import to_float
from clef.data.dataset import ImageRecords
from clef.finetuned import FineTuneModel
from clef.label_space import LabelSpace
from clef.model import ClefModel, build_text_classifier

__all__ = ["embed_images", "Predictions", "predict", "predict_texts"]


@torch.no_grad()
def embed_images(
    clef: ClefModel,
    records: pd.DataFrame,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = True,
    desc: str = "embedding",
) -> torch.Tensor:
    """(N, D) unit-norm image embeddings of every record, in table order, on the CPU (no augmentation).

    ``clef`` must already be on ``device``; it runs in eval mode and gets its train/eval mode back.
    """
    dataset = ImageRecords(records, clef.preprocess.image_size, expressions=None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    was_training = clef.training
    clef.eval()
    out = []
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            x = clef.preprocess.normalize(to_float(batch["image"].to(device)))
            out.append(clef.encode_image(x).float().cpu())
    finally:
        clef.train(was_training)
    if not out:
        return torch.zeros(0, clef.embed_dim)
    return torch.cat(out)


@dataclass
class Predictions:
    """Scores of N records for the labels of ``space`` (column order): (N, C) arrays."""

    space: LabelSpace
    logits: np.ndarray
    probabilities: np.ndarray

    @property
    def labels(self) -> tuple[str, ...]:
        return self.space.ids

    def predicted_classes(self) -> np.ndarray:
        """(N,) arg-max label index (one-of-C label spaces)."""
        return self.probabilities.argmax(axis=1)


def _scores(space: LabelSpace, logits: torch.Tensor) -> Predictions:
    probabilities = space.probabilities(logits)
    return Predictions(space, logits.float().cpu().numpy(), probabilities.float().cpu().numpy())


@torch.no_grad()
def predict(
    model: FineTuneModel,
    records: pd.DataFrame,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = True,
) -> Predictions:
    """Score ``records`` with a fine-tuned model's own head and label texts."""
    model.eval()
    emb = embed_images(model.clef, records, batch_size, device, workers, progress).to(device)
    protos = model.prototypes()
    logits = torch.cat([model.logits(emb[i : i + 4096], protos) for i in range(0, len(emb), 4096)])
    return _scores(model.space, logits)


@torch.no_grad()
def predict_texts(
    clef: ClefModel,
    records: pd.DataFrame,
    labels: Sequence[str],
    texts: Sequence[str],
    templates: Sequence[str],
    multi_label: bool = False,
    bias: torch.Tensor | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = True,
) -> Predictions:
    """Score ``records`` against arbitrary label texts (zero-shot): logit_c = scale·cos(v, t_c) (+ bias_c).

    ``texts`` (one per label) go through ``templates`` (averaged); ``multi_label`` picks independent
    sigmoids, else one softmax over the labels.
    """
    if len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels but {len(texts)} texts")
    clef.eval()
    emb = embed_images(clef, records, batch_size, device, workers, progress).to(device)
    protos = build_text_classifier(clef, list(texts), list(templates))
    logits = clef.scale() * emb @ protos.t()
    if bias is not None:
        logits = logits + bias.to(logits.device)
    space = LabelSpace(tuple(labels), tuple(texts), tuple(texts), multi_label=multi_label)
    return _scores(space, logits)
