"""The stage-2 training step: L_fine = L_IN + w · L_DN on a batch (docs/method.md §4).

This is the step function :func:`clef.engine.train` calls for fine-tuning, as :mod:`clef.stage1` is
for pre-training; it assembles the parts (augmentation, the fine-tuned model's prototypes, losses)
and owns no loop. :class:`MethodConfig` holds the ablation's stage-2 switches: ``head`` (``linear``
= I, ``names`` = N, ``descriptions`` = D without N) and ``description_loss`` (L_DN, the D of "N + D");
stage 1 (PA, PI) is *which checkpoint* the run starts from (``init.checkpoint``; docs/stage2.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from clef.augment import BatchAugment, to_float
from clef.errors import UserError
from clef.finetuned import FineTuneModel
from clef.losses import description_name_loss, masked_bce_loss

__all__ = ["MethodConfig", "Stage2Step", "au_pos_weights"]


@dataclass(frozen=True)
class MethodConfig:
    """The stage-2 method (docs/method.md §4). See docs/stage2.md for the ablation mapping."""

    task: Literal["au", "fer"] = "au"
    # linear = I (image encoder + linear head, no text); names = N (label-name prototypes);
    # descriptions = "D without N" (description prototypes).
    head: Literal["linear", "names", "descriptions"] = "names"
    description_loss: bool = True  # L_DN between description and name embeddings (needs head=names)
    description_weight: float = 1.0
    au_prompt: Literal["single", "pair"] = "single"  # one prompt per AU, or the with/without pair
    negative_templates: tuple[str, ...] = ("a photo of a person without {}.", "a photo of a face without {}.")
    au_pos_weight: Literal["none", "balanced"] = "none"  # balanced: #neg/#pos per AU, capped
    au_pos_weight_max: float = 10.0
    augment: bool = True

    def __post_init__(self) -> None:
        for template in self.negative_templates:
            if template.count("{}") != 1:
                raise UserError(f"negative template {template!r} must contain '{{}}' exactly once")
        if self.description_weight < 0 or self.au_pos_weight_max < 1:
            raise UserError("method.description_weight must be >= 0 and au_pos_weight_max >= 1")

    def validate(self) -> None:
        """Cross-field checks, run when a model is built (not per override: ``head=linear`` followed
        by ``description_loss=false`` on a command line passes through an inconsistent state).

        Raises:
            UserError: naming the keys that conflict.
        """
        if self.description_loss and self.head != "names":
            raise UserError(
                f"method.description_loss=true needs method.head=names (L_DN ties descriptions to "
                f"names); head={self.head!r} has no name prototypes. Set method.description_loss=false."
            )
        if self.au_prompt == "pair" and (self.task != "au" or self.head != "names"):
            raise UserError("method.au_prompt=pair needs method.task=au and method.head=names")
        if self.au_prompt == "pair" and not self.negative_templates:
            raise UserError("method.au_prompt=pair needs method.negative_templates")


def au_pos_weights(targets: np.ndarray, mask: np.ndarray, cap: float = 10.0) -> torch.Tensor:
    """(J,) positive-class weights #negatives / #positives over coded labels, clipped to [1, cap].

    An AU without a positive coded label gets ``cap``.
    """
    t, m = np.asarray(targets, bool), np.asarray(mask, bool)
    pos = (t & m).sum(axis=0).astype(np.float64)
    neg = (~t & m).sum(axis=0).astype(np.float64)
    ratio = np.where(pos > 0, neg / np.maximum(pos, 1), cap)
    return torch.tensor(np.clip(ratio, 1.0, cap), dtype=torch.float32)


class Stage2Step:
    """``(model: FineTuneModel, batch) -> {"loss", "loss_task", "loss_dn", "logit_scale"}``.

    L_fine = L_IN + w · L_DN (docs/method.md §4):

    * L_IN, one-of-C labels (FER): cross-entropy of the softmax over the C prototypes
      (``expression`` (B,) int64);
    * L_IN, independent labels (AUs): masked BCE of logit_j = scale·cos(v, t_j) + b_j
      (``au`` (B, J), ``au_mask`` (B, J));
    * the "I" baseline: the same losses on a linear head's logits;
    * L_DN: symmetric InfoNCE between descriptions and names, when ``method.description_loss``.

    Prototypes come from :meth:`FineTuneModel.prototypes` on label texts each put into one template
    drawn from ``generator`` at this step (prompt augmentation; 2C short prompts per step instead
    of C × T).

    Args:
        method: :class:`MethodConfig`.
        augment: batched augmentation of the uint8 images, or None (images only scaled to [0, 1]).
        generator: CPU generator for the augmentation and the template draws (the engine saves it).
        pos_weight: (J,) AU positive-class weights, or None.
    """

    def __init__(
        self,
        method: MethodConfig,
        augment: BatchAugment | None,
        generator: torch.Generator,
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        self.method = method
        self.augment = augment
        self.generator = generator
        self.pos_weight = pos_weight

    def __call__(self, model: FineTuneModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = self.augment(batch["image"], self.generator) if self.augment else to_float(batch["image"])
        v = model.clef.encode_image(model.clef.preprocess.normalize(images))  # (B, D)
        scale = model.clef.scale()
        kinds = model.text_kinds()
        with_dn = self.method.description_loss and "names" in kinds
        if with_dn and "descriptions" not in kinds:
            kinds += ("descriptions",)
        text = model.text_embeddings(kinds, self.generator)  # (C, D) per kind
        logits = model.logits(v, model.prototypes(text))

        if model.space.multi_label:
            pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
            loss_task = masked_bce_loss(logits, batch["au"], batch["au_mask"], pos_weight)
        else:
            loss_task = F.cross_entropy(logits.float(), batch["expression"])

        loss_dn = loss_task.new_zeros(())
        if with_dn:
            loss_dn = description_name_loss(text["descriptions"], text["names"], scale)
            if model.clef.text_tower.is_frozen:
                # Both sides fixed: only the logit scale could move, which L_DN is not meant to tune.
                loss_dn = loss_dn.detach()
        loss = loss_task + self.method.description_weight * loss_dn
        return {
            "loss": loss,
            "loss_task": loss_task.detach(),
            "loss_dn": loss_dn.detach(),
            "logit_scale": scale.detach(),
        }
