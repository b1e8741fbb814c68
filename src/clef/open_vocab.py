"""Open-vocabulary labels: texts a model was not trained on, scored zero-shot (docs/method.md §4).

A CLEF model's labels are texts, so any new text t can be scored against a face: the zero-shot logit
is ``scale · cos(v, t)``, with v the image embedding, t the text's embedding and ``scale`` the model's
learnt logit scale (no bias: nothing was trained for the text). Independent labels get a sigmoid of
it; the labels of a named *group* (a user's own expression set) get one softmax over the group.

Texts come from the command line or a label file (:func:`read_label_file`)::

    # blank lines and lines starting with # are ignored
    a person with a wide smile                 <- an independent label, column name derived
    frown = a person frowning                  <- an independent label with its own column name
    [group mood]                               <- the labels below share one softmax, decision column "mood"
    happy = a happy face
    a sad face
    [independent]                              <- back to independent labels
    raised eyebrows

Column names (:func:`assign_columns`): a name given as ``NAME = text`` is used as written (letters,
digits, ``_``; not starting with a digit; at most 64 characters). A name derived from a text is the
text in lower case with accents removed, every run of other characters than a-z and 0-9 turned into
one ``_``, no ``_`` at either end, cut to 40 characters at a ``_`` where possible, ``t_`` in front
when it starts with a digit, ``label`` when nothing is left. A label owns the columns ``NAME_cos``,
``NAME_prob`` and (independent labels) ``NAME``; a derived name whose columns collide with a column
already taken gets ``_2``, ``_3``, ... ; a chosen name or group name that collides is an error.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clef.errors import UserError
from clef.model import ClefModel, build_text_classifier

__all__ = [
    "OpenLabel",
    "OpenVocabulary",
    "read_label_file",
    "assign_columns",
    "derived_name",
    "OpenVocabularyScores",
]

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ASSIGNMENT = re.compile(r"^([A-Za-z0-9_]+)\s*=\s*(.*)$")
_HEADER = re.compile(r"^\[(.*)\]$")
DERIVED_LENGTH = 40


@dataclass(frozen=True)
class OpenLabel:
    """One text to score. ``name``: the user's column name (None: derived); ``group``: the group it
    belongs to (None: independent); ``where``: "FILE, line N" or "--labels" for messages."""

    text: str
    name: str | None = None
    group: str | None = None
    where: str = "--labels"


@dataclass(frozen=True)
class OpenVocabulary:
    """Labels with their final column names, in column order. ``columns[k]`` is the name of
    ``labels[k]``; ``groups`` lists each group's name and the indices of its labels."""

    labels: tuple[OpenLabel, ...]
    columns: tuple[str, ...]

    @property
    def groups(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for k, label in enumerate(self.labels):
            if label.group is not None:
                out.setdefault(label.group, []).append(k)
        return out

    @property
    def independent(self) -> list[int]:
        return [k for k, label in enumerate(self.labels) if label.group is None]

    def output_columns(self) -> list[str]:
        """Every column these labels write, in order (independent labels first, then each group)."""
        cols: list[str] = []
        for k in self.independent:
            cols += [f"{self.columns[k]}_cos", f"{self.columns[k]}_prob", self.columns[k]]
        for group, members in self.groups.items():
            for k in members:
                cols += [f"{self.columns[k]}_cos", f"{self.columns[k]}_prob"]
            cols.append(group)
        return cols

    def to_dict(self) -> dict:
        return {
            "labels": [
                {"column": c, "text": label.text, "group": label.group}
                for label, c in zip(self.labels, self.columns, strict=True)
            ],
            "groups": self.groups and {g: [self.columns[k] for k in ks] for g, ks in self.groups.items()},
        }


def read_label_file(path: str | Path) -> list[OpenLabel]:
    """The labels of a label file (syntax in the module docstring), in file order.

    Raises:
        UserError: the file cannot be read, a header or name is malformed, a group has fewer than
            two labels, or the file holds no label — naming the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the label file ({err})") from None
    labels: list[OpenLabel] = []
    group: str | None = None
    group_line = 0
    group_sizes: dict[str, tuple[int, int]] = {}  # name -> (line of its header, labels)
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        where = f"{path}, line {number}"
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            words = header.group(1).split()
            if words == ["independent"]:
                group = None
            elif len(words) == 2 and words[0] == "group":
                name = words[1]
                if not NAME_PATTERN.fullmatch(name):
                    raise UserError(
                        f"{where}: group name {name!r} must be letters, digits and _ (not first a digit)"
                    )
                if name in group_sizes:
                    raise UserError(
                        f"{where}: group {name!r} is already defined (line {group_sizes[name][0]})"
                    )
                group, group_line = name, number
                group_sizes[name] = (number, 0)
            else:
                raise UserError(f"{where}: a section header is [group NAME] or [independent], got {line!r}")
            continue
        name, text = None, line
        assignment = _ASSIGNMENT.match(line)
        if assignment:
            name, text = assignment.group(1), assignment.group(2).strip()
            if not NAME_PATTERN.fullmatch(name):
                raise UserError(
                    f"{where}: column name {name!r} must be letters, digits and _ (not first a digit), "
                    "at most 64 characters"
                )
            if not text:
                raise UserError(f"{where}: label {name!r} has no text after '='")
        labels.append(OpenLabel(text, name, group, where))
        if group is not None:
            group_sizes[group] = (group_line, group_sizes[group][1] + 1)
    for name, (line, size) in group_sizes.items():
        if size < 2:
            raise UserError(
                f"{path}, line {line}: group {name!r} has {size} label(s); a group needs at least two "
                "(its labels share one softmax)"
            )
    if not labels:
        raise UserError(f"{path}: the label file holds no label")
    return labels


def derived_name(text: str) -> str:
    """The column name stem of a text (rule in the module docstring), before collisions are resolved."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    if len(stem) > DERIVED_LENGTH:
        cut = stem[:DERIVED_LENGTH]
        stem = cut.rsplit("_", 1)[0] if "_" in cut[DERIVED_LENGTH // 2 :] else cut
    if not stem:
        return "label"
    return f"t_{stem}" if stem[0].isdigit() else stem


def assign_columns(labels: Sequence[OpenLabel], taken: Iterable[str] = ()) -> OpenVocabulary:
    """Give every label a unique, safe column name, none of whose columns is in ``taken`` (the columns
    already in the output: fixed columns, the trained labels' columns).

    Raises:
        UserError: no labels; a chosen name or a group name collides with a taken column.
    """
    if not labels:
        raise UserError("no open-vocabulary labels given")
    used = set(taken)

    def claim(columns: list[str]) -> None:
        used.update(columns)

    groups = list(dict.fromkeys(label.group for label in labels if label.group is not None))
    for group in groups:
        if group in used:
            raise UserError(f"group name {group!r} is already a column of the output; rename the group")
        claim([group])
    names: list[str] = []
    for label in labels:
        suffixes = ["_cos", "_prob"] + ([""] if label.group is None else [])
        if label.name is not None:
            columns = [label.name + s for s in suffixes]
            clash = [c for c in columns if c in used]
            if clash:
                raise UserError(f"{label.where}: column {clash[0]!r} is already used; choose another name")
            name = label.name
        else:
            stem, k = derived_name(label.text), 1
            name = stem
            while any(name + s in used for s in suffixes):
                k += 1
                name = f"{stem}_{k}"
        claim([name + s for s in suffixes])
        names.append(name)
    return OpenVocabulary(tuple(labels), tuple(names))


class OpenVocabularyScores:
    """Scores a batch of image embeddings against an :class:`OpenVocabulary`.

    Prototypes: each text through ``templates`` (every template, embeddings averaged and renormalised:
    :func:`clef.model.build_text_classifier`), computed once. For (B, D) unit-norm image embeddings
    :meth:`columns` gives, per label, ``_cos`` = cos(v, t), ``_prob`` = sigmoid(scale · cos) for
    independent labels or the softmax of scale · cos over the label's group, the 0/1 decision
    (``_prob`` >= 0.5) of independent labels and each group's arg-max label name.
    """

    def __init__(self, clef: ClefModel, vocabulary: OpenVocabulary, templates: Sequence[str]) -> None:
        self.vocabulary = vocabulary
        self.templates = tuple(templates)
        self.clef = clef
        with torch.no_grad():
            texts = [label.text for label in vocabulary.labels]
            self.prototypes = build_text_classifier(clef, texts, self.templates)  # (K, D)

    @torch.no_grad()
    def columns(self, embeddings: Tensor) -> dict[str, np.ndarray]:
        vocab = self.vocabulary
        cos = embeddings.float() @ self.prototypes.float().t()  # (B, K)
        logits = self.clef.scale().float() * cos
        out: dict[str, np.ndarray] = {}
        cos_np = cos.cpu().numpy()
        for k in vocab.independent:
            prob = torch.sigmoid(logits[:, k]).cpu().numpy()
            name = vocab.columns[k]
            out[f"{name}_cos"], out[f"{name}_prob"] = cos_np[:, k], prob
            out[name] = (prob >= 0.5).astype(np.int64)
        for group, members in vocab.groups.items():
            prob = logits[:, members].softmax(dim=-1).cpu().numpy()
            for j, k in enumerate(members):
                name = vocab.columns[k]
                out[f"{name}_cos"], out[f"{name}_prob"] = cos_np[:, k], prob[:, j]
            out[group] = np.array([vocab.columns[members[j]] for j in prob.argmax(axis=1)], dtype=object)
        return {c: out[c] for c in vocab.output_columns()}
