"""The fine-tuned model: a CLEF dual encoder, a stage-2 head and the label texts that define its outputs.

:class:`FineTuneModel` scores images against its :class:`clef.label_space.LabelSpace`. How it turns
label texts into *prototypes* is decided in one place, :meth:`FineTuneModel.prototypes`, for training
and inference alike; the two differ only in how each label's text is put into a template:

* inference (no generator): every template, embeddings averaged (CLIP's prompt ensembling);
* training (a generator): one template drawn per label at each step (prompt augmentation,
  docs/method.md §4), one text-tower pass per kind of text.

Heads (:mod:`clef.heads`): ``linear`` (the ablation's I: no text), ``names`` (N: label-name
prototypes; for AUs one prompt per AU with a bias, or the with/without prompt pair) and
``descriptions`` (D without N: description prototypes).

:func:`save_finetuned` / :func:`load_finetuned` write and read the model as a clef checkpoint
(safetensors + JSON sidecar with the label space, texts, templates and thresholds), so a fine-tuned
model is used without its training config or prompt file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clef.checkpoint import load_checkpoint, save_checkpoint
from clef.errors import UserError
from clef.heads import LinearHead, PromptPairAUHead, TextAUHead, TextFERHead
from clef.label_space import LabelSpace
from clef.model import ClefModel, build_text_classifier

__all__ = ["HEADS", "AU_PROMPTS", "FineTuneModel", "save_finetuned", "load_finetuned"]

HEADS = ("linear", "names", "descriptions")
AU_PROMPTS = ("single", "pair")


class FineTuneModel(nn.Module):
    """A CLEF dual encoder with a stage-2 head and the texts that define its outputs.

    Args:
        clef: the dual encoder.
        space: the labels (order = output order) and their texts.
        head: ``linear`` (I), ``names`` (N) or ``descriptions`` (D without N).
        name_templates / description_templates: prompt templates (each with one ``{}``).
        au_prompt: ``single`` (logit = scale·cos + b_j) or ``pair`` (with / without, 2-way softmax);
            ``pair`` needs independent labels and the ``names`` head.
        negative_templates: the "without" templates of ``au_prompt=pair``.

    Shapes: :meth:`prototypes` -> (C, D), or (2, C, D) for the prompt pair (index 0 "without");
    :meth:`logits` (B, D) unit-norm image embeddings -> (B, C).

    Raises:
        UserError: an unknown head or AU prompt scheme, or a combination that does not exist.
    """

    def __init__(
        self,
        clef: ClefModel,
        space: LabelSpace,
        head: str = "names",
        name_templates: Sequence[str] = ("{}",),
        description_templates: Sequence[str] = ("{}",),
        au_prompt: str = "single",
        negative_templates: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise UserError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
        if au_prompt not in AU_PROMPTS:
            raise UserError(f"unknown au_prompt {au_prompt!r}; valid: {', '.join(AU_PROMPTS)}")
        if au_prompt == "pair" and not (space.multi_label and head == "names" and negative_templates):
            raise UserError("au_prompt=pair needs independent labels, head=names and negative templates")
        self.clef = clef
        self.space = space
        self.head_kind = head
        self.au_prompt = au_prompt
        self.name_templates = tuple(name_templates)
        self.description_templates = tuple(description_templates)
        self.negative_templates = tuple(negative_templates)
        if head == "linear":
            self.head: nn.Module = LinearHead(clef.embed_dim, len(space))
        elif not space.multi_label:
            self.head = TextFERHead()
        elif au_prompt == "pair":
            self.head = PromptPairAUHead()
        else:
            self.head = TextAUHead(len(space))

    @property
    def uses_text(self) -> bool:
        return self.head_kind != "linear"

    def text_kinds(self) -> tuple[str, ...]:
        """The kinds of label text the head scores against (``names``, ``negatives``, ``descriptions``)."""
        if self.head_kind == "linear":
            return ()
        if self.head_kind == "descriptions":
            return ("descriptions",)
        return ("names", "negatives") if self.au_prompt == "pair" else ("names",)

    def _texts(self, kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if kind == "names":
            return self.space.names, self.name_templates
        if kind == "negatives":
            return self.space.names, self.negative_templates
        if kind == "descriptions":
            return self.space.descriptions, self.description_templates
        raise ValueError(f"unknown text kind {kind!r}; valid: names, negatives, descriptions")

    def text_embeddings(
        self, kinds: Sequence[str], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """For each kind, the (C, D) unit-norm embeddings of the C label texts.

        ``generator`` None (inference): each text through every template of its kind, averaged.
        A generator (training): each text put into one template drawn from ``generator`` (all draws
        first, in the order of ``kinds``; they are the same whether or not the tower is frozen), one
        text-tower pass per kind: names are a few tokens and descriptions a sentence, so passes of
        their own are padded far less than one mixed pass. A frozen tower's embeddings come from
        :meth:`ClefModel.embed_texts`'s cache, a frozen prefix's from the tower's own.
        """
        if generator is None:
            return {kind: build_text_classifier(self.clef, *self._texts(kind)) for kind in kinds}
        choices = {}
        for kind in kinds:
            texts, templates = self._texts(kind)
            choices[kind] = torch.randint(len(templates), (len(texts),), generator=generator)
        out = {}
        for kind, choice in choices.items():
            texts, templates = self._texts(kind)
            prompts = [templates[int(k)].replace("{}", t) for t, k in zip(texts, choice, strict=True)]
            out[kind] = self.clef.embed_texts(prompts)
        return out

    def prototypes(self, text: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """The head's prototypes from label-text embeddings (the one place that chooses them).

        ``text``: embeddings by kind, as :meth:`text_embeddings` returns them (training passes its
        sampled ones); None computes the inference embeddings (all templates averaged).
        Returns (C, D) names (N) or descriptions (D without N), (2, C, D) for the prompt pair, or
        None for the linear head.
        """
        kinds = self.text_kinds()
        if not kinds:
            return None
        if text is None:
            text = self.text_embeddings(kinds)
        if self.head_kind == "descriptions":
            return text["descriptions"]
        if self.au_prompt == "pair":
            return torch.stack([text["negatives"], text["names"]])
        return text["names"]

    def logits(self, image: torch.Tensor, prototypes: torch.Tensor | None) -> torch.Tensor:
        """(B, D) unit-norm image embeddings -> (B, C) logits."""
        if self.head_kind == "linear":
            return self.head(image)
        return self.head(image, prototypes.to(image.dtype), self.clef.scale())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, S, S) -> (B, C) logits with the inference prototypes."""
        return self.logits(self.clef.encode_image(images), self.prototypes())


# ------------------------------------------------------------------------------------- checkpoints
def save_finetuned(
    path: str | Path,
    model: FineTuneModel,
    *,
    prompt_set: str | None = None,
    training_config: Any = None,
    metrics: dict[str, Any] | None = None,
    notes: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``NAME.safetensors`` + ``NAME.json``: the dual encoder, the head (extra tensors
    ``head.*``), the label space (ids in output order, texts, whether labels are independent),
    thresholds 0.5 for independent labels, and the templates that rebuild the prototypes without the
    prompt file."""
    space = model.space
    stage2 = {
        "head": model.head_kind,
        "au_prompt": model.au_prompt,
        "label_space": space.to_dict(),
        "name_templates": list(model.name_templates),
        "description_templates": list(model.description_templates),
        "negative_templates": list(model.negative_templates),
    }
    return save_checkpoint(
        path,
        model.clef,
        prompt_set=prompt_set,
        labels=space.ids,
        task=space.task,
        thresholds=space.thresholds(),
        training_config=training_config,
        metrics=metrics,
        extra_tensors={f"head.{k}": v for k, v in model.head.state_dict().items()},
        notes={"stage2": stage2, **(notes or {})},
    )


def load_finetuned(path: str | Path, device: str | torch.device = "cpu") -> tuple[FineTuneModel, dict]:
    """Rebuild a model written by :func:`save_finetuned` -> ``(model in eval mode, sidecar meta)``.

    Raises:
        UserError: the checkpoint is not a stage-2 checkpoint (e.g. a stage-1 one), or its sidecar
            lacks what rebuilds the head.
    """
    clef, meta = load_checkpoint(path, device=device)
    stage2 = (meta.get("notes") or {}).get("stage2")
    if not stage2:
        raise UserError(f"{path}: not a fine-tuned (stage-2) checkpoint; it has no label head")
    try:
        space = LabelSpace.from_dict(stage2["label_space"])
        model = FineTuneModel(
            clef,
            space,
            head=stage2["head"],
            name_templates=stage2["name_templates"],
            description_templates=stage2["description_templates"],
            au_prompt=stage2["au_prompt"],
            negative_templates=stage2["negative_templates"],
        )
    except KeyError as err:
        raise UserError(f"{path}: the stage-2 sidecar lacks {err}") from None
    head_state = {k[len("head.") :]: v for k, v in meta["extra_tensors"].items() if k.startswith("head.")}
    try:
        model.head.load_state_dict(head_state, strict=True)
    except RuntimeError as err:
        raise UserError(f"{path}: the head's tensors do not fit its label space: {err}") from None
    return model.to(device).eval(), meta
