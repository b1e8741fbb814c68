"""The label space of a fine-tuned model: which labels it outputs, in which order, and their texts.

A :class:`LabelSpace` is data, not a convention hidden in strings: each label has an id (the column
name every output file uses: ``AU12``, ``happiness``), a name text and a description text (what stage 2
embeds, docs/method.md §4), and the space says whether its labels are independent (``multi_label``:
one sigmoid per label, e.g. AUs) or mutually exclusive (one softmax over the labels, e.g. expressions).
When the labels are action units, ``aus`` holds their FACS numbers (same order), so nothing has to
parse ``"AU12"`` back into 12. A label set that is neither (a user's own open-vocabulary texts) is a
label space with ``aus=()``.

The activation lives here (:meth:`LabelSpace.probabilities`), so no code branches on a dataset's task
to choose between sigmoid and softmax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clef.errors import UserError
from clef.labels import au_column

__all__ = ["LabelSpace", "au_label_space", "expression_label_space", "label_space", "TASKS"]

# Label tasks a fine-tuning run can train: AU occurrence (independent labels) or one expression class.
TASKS = ("au", "fer")


@dataclass(frozen=True)
class LabelSpace:
    """The outputs of a model, in order.

    Attributes:
        ids: label ids, one per output column (``AU12``, ``happiness``, or a user's own ids).
        names: the label-name text of each label (put into the name templates).
        descriptions: the description text of each label (put into the description templates).
        multi_label: True when labels are independent (sigmoid per label, threshold 0.5); False when
            exactly one label applies (softmax over the labels, arg-max decision).
        aus: the FACS number of each label when the labels are action units, else ``()``.
    """

    ids: tuple[str, ...]
    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    multi_label: bool
    aus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.ids)
        if n == 0:
            raise UserError("a label space needs at least one label")
        if len(self.names) != n or len(self.descriptions) != n:
            raise ValueError(
                f"{n} labels but {len(self.names)} names and {len(self.descriptions)} descriptions"
            )
        if len(set(self.ids)) != n:
            raise UserError(f"label ids must be unique, got {list(self.ids)}")
        if self.aus and len(self.aus) != n:
            raise ValueError(f"{n} labels but {len(self.aus)} AU numbers")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_au(self) -> bool:
        """True when the labels are action units (targets come from the records' ``AU<n>`` columns)."""
        return bool(self.aus)

    @property
    def task(self) -> str:
        """``"au"`` for AU labels, ``"fer"`` for one-of-C expression labels (what checkpoints record)."""
        if self.is_au:
            return "au"
        return "fer" if not self.multi_label else "multi-label"

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, C) logits -> (N, C) probabilities: independent sigmoids or one softmax over the labels."""
        return torch.sigmoid(logits) if self.multi_label else logits.softmax(dim=-1)

    def thresholds(self) -> dict[str, float] | None:
        """Decision threshold of each independent label (0.5, never tuned); None for one-of-C spaces."""
        return {label: 0.5 for label in self.ids} if self.multi_label else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (checkpoint sidecars)."""
        return {
            "ids": list(self.ids),
            "names": list(self.names),
            "descriptions": list(self.descriptions),
            "multi_label": self.multi_label,
            "aus": list(self.aus),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSpace:
        """Inverse of :meth:`to_dict`.

        Raises:
            UserError: a key is missing.
        """
        missing = [k for k in ("ids", "names", "descriptions", "multi_label") if k not in data]
        if missing:
            raise UserError(f"a label space record lacks {', '.join(missing)}")
        return cls(
            tuple(data["ids"]),
            tuple(data["names"]),
            tuple(data["descriptions"]),
            bool(data["multi_label"]),
            tuple(int(a) for a in data.get("aus") or ()),
        )


def au_label_space(prompt_set, aus: Sequence[int]) -> LabelSpace:
    """Independent AU labels ``AU<n>`` with the prompt set's FACS names and descriptions."""
    aus = tuple(int(a) for a in aus)
    if not aus:
        raise UserError("an AU label space needs at least one AU")
    return LabelSpace(
        tuple(au_column(a) for a in aus),
        tuple(prompt_set.au_name_texts(aus)),
        tuple(prompt_set.au_description_texts(aus)),
        multi_label=True,
        aus=aus,
    )


def expression_label_space(prompt_set, classes: Sequence[str]) -> LabelSpace:
    """One-of-C expression labels (canonical names) with the prompt set's name and description texts."""
    classes = tuple(classes)
    if not classes:
        raise UserError("an FER label space needs at least one class")
    return LabelSpace(
        classes,
        tuple(prompt_set.expression_name_texts(classes)),
        tuple(prompt_set.expression_description_texts(classes)),
        multi_label=False,
    )


def label_space(task: str, prompt_set, aus: Sequence[int] = (), classes: Sequence[str] = ()) -> LabelSpace:
    """The label space of ``task``: AUs ``aus`` (task ``au``) or expression ``classes`` (task ``fer``).

    ``prompt_set`` is a :class:`clef.prompts.PromptSet` or a name/path for
    :func:`clef.prompts.load_prompt_set`.

    Raises:
        UserError: an unknown task, no labels, or a label without a name or description text.
    """
    if isinstance(prompt_set, (str, Path)):
        from clef.prompts import load_prompt_set

        prompt_set = load_prompt_set(str(prompt_set))
    if task == "au":
        return au_label_space(prompt_set, aus)
    if task == "fer":
        return expression_label_space(prompt_set, classes)
    raise UserError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
