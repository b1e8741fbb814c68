"""Zero-shot transfer to labels never trained on (docs/method.md §4 "Inference", §5 zero-shot table).

Two protocols, as in the paper's zero-shot table:

* **Unseen expressions** (:func:`unseen_expression_protocol`): fine-tune FER on the *seen*
  expressions only (their images, and only their names in the label space), then score every test
  image against the names of *all* classes. Reported: accuracy on the unseen-class images (over all
  class names; chance 1/C), overall accuracy (chance 1/C), and accuracy on the unseen-class images
  when only the unseen names compete (chance 1/U). The default split is docs/method.md §5's (ours):
  seen = happiness, sadness, anger, neutral; unseen = the rest of the dataset's classes.
* **AU → FER** (:func:`au_to_fer_protocol`): a model fine-tuned on AU detection only scores FER images
  against expression names or descriptions (:func:`clef.inference.predict_texts`); no expression label
  was ever used in training. Chance 1/C.

Every score carries its chance level. :func:`seen_training_records` is the single place the unseen
classes are removed from the training side; it refuses a selection that still holds one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clef.errors import UserError
from clef.labels import EXPRESSIONS

__all__ = [
    "DEFAULT_SEEN",
    "ZeroShotScore",
    "ZeroShotResult",
    "split_classes",
    "seen_training_records",
    "score_fer_texts",
    "unseen_expression_protocol",
    "au_to_fer_protocol",
    "write_zeroshot",
]

# docs/method.md §5 (ours): the paper does not say which expressions were seen.
DEFAULT_SEEN: tuple[str, ...] = ("happiness", "sadness", "anger", "neutral")


@dataclass
class ZeroShotScore:
    """One zero-shot number with its chance level (fractions in [0, 1])."""

    protocol: str  # "unseen-expressions" or "au-to-fer"
    texts: str  # "names" or "descriptions": what the class prototypes were made of
    classes: list[str]  # every class scored against
    unseen: list[str]  # classes never trained on (all of them for au-to-fer)
    accuracy_unseen: float  # on unseen-class images, over all class texts
    chance_unseen: float
    accuracy_all: float  # on every test image, over all class texts
    chance_all: float
    accuracy_unseen_only: float | None = None  # unseen images, only the unseen texts compete
    chance_unseen_only: float | None = None
    n_unseen: int = 0
    n_all: int = 0
    confusion: list[list[int]] = field(default_factory=list)  # rows = truth, over ``classes``


@dataclass
class ZeroShotResult:
    """A protocol's scores plus what its training saw (for audits and tests)."""

    scores: list[ZeroShotScore]
    train_classes: list[str]  # the label space trained on ([] for au-to-fer: AUs only)
    train_expressions: list[str]  # distinct expressions among the training records actually used
    n_train: int
    checkpoint: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def split_classes(classes: Sequence[str], seen: Sequence[str] = DEFAULT_SEEN) -> tuple[tuple, tuple]:
    """(seen, unseen) over ``classes`` (dataset order kept); unseen = every class not seen.

    Raises:
        UserError: a seen class the dataset does not have, or a split with no seen / no unseen class.
    """
    unknown = [c for c in seen if c not in classes]
    if unknown:
        raise UserError(
            f"seen classes {unknown} are not classes of the dataset (its classes: {', '.join(classes)})"
        )
    seen_t = tuple(c for c in classes if c in seen)
    unseen_t = tuple(c for c in classes if c not in seen)
    if not seen_t or not unseen_t:
        raise UserError(
            f"a zero-shot split needs seen and unseen classes; got seen={seen_t}, unseen={unseen_t}"
        )
    return seen_t, unseen_t


def seen_training_records(records: pd.DataFrame, seen: Sequence[str]) -> pd.DataFrame:
    """The records whose expression is a seen class; asserts that no other class survives."""
    keep = records["expression"].isin(list(seen)).fillna(False).astype(bool)
    out = records[keep]
    leaked = set(out["expression"].dropna()) - set(seen)
    if leaked:  # cannot happen by construction; the protocol's guarantee is checked, not assumed
        raise AssertionError(f"unseen classes {sorted(leaked)} in the training records")
    return out


def score_fer_texts(
    clef,
    records: pd.DataFrame,
    classes: Sequence[str],
    texts: Sequence[str],
    templates: Sequence[str],
    unseen: Sequence[str],
    protocol: str,
    kind: str,
    device: str = "cpu",
    progress: bool = True,
) -> ZeroShotScore:
    """Score ``records`` (each with an expression in ``classes``) against one text per class."""
    from clef.inference import predict_texts

    records = records[records["expression"].isin(list(classes)).fillna(False).astype(bool)]
    if records.empty:
        raise UserError(f"no test record shows one of {list(classes)}")
    pred = predict_texts(clef, records, classes, texts, templates, device=device, progress=progress)
    lookup = {c: k for k, c in enumerate(classes)}
    target = np.array([lookup[e] for e in records["expression"]], dtype=np.int64)
    guess = pred.probabilities.argmax(axis=1)
    unseen_idx = np.array([lookup[c] for c in unseen], dtype=np.int64)
    on_unseen = np.isin(target, unseen_idx)
    acc_unseen = float((guess[on_unseen] == target[on_unseen]).mean()) if on_unseen.any() else float("nan")
    # Unseen images with only the unseen names competing (a softer, also-reported variant).
    only = None
    if on_unseen.any() and len(unseen) < len(classes):
        sub = pred.logits[on_unseen][:, unseen_idx].argmax(axis=1)
        only = float((unseen_idx[sub] == target[on_unseen]).mean())
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (target, guess), 1)
    n = len(classes)
    return ZeroShotScore(
        protocol=protocol,
        texts=kind,
        classes=list(classes),
        unseen=list(unseen),
        accuracy_unseen=acc_unseen,
        chance_unseen=1.0 / n,
        accuracy_all=float((guess == target).mean()),
        chance_all=1.0 / n,
        accuracy_unseen_only=only,
        chance_unseen_only=None if only is None else 1.0 / len(unseen),
        n_unseen=int(on_unseen.sum()),
        n_all=len(target),
        confusion=confusion.tolist(),
    )


def _class_texts(prompt_set, classes: Sequence[str], kind: str) -> tuple[list[str], list[str]]:
    if kind == "names":
        return prompt_set.expression_name_texts(classes), list(prompt_set.name_templates)
    if kind == "descriptions":
        return prompt_set.expression_description_texts(classes), list(prompt_set.description_templates)
    raise UserError(f"unknown text kind {kind!r}; valid: names, descriptions")


def unseen_expression_protocol(
    cfg,
    seen: Sequence[str] = DEFAULT_SEEN,
    records: pd.DataFrame | None = None,
    kinds: Sequence[str] = ("names",),
    progress: bool = True,
    reuse: bool = False,
) -> ZeroShotResult:
    """Fine-tune FER on the seen expressions only, then score all test images against all classes.

    Args:
        cfg: a :class:`clef.finetune.FinetuneConfig` with ``method.task: fer``; its ``data.classes``
            (or the dataset's own class list) is the full class set; the label space trained on is
            reduced to the seen classes. ``method.head`` must use text (names or descriptions).
        seen: the seen classes (must be classes of the dataset).
        records: the dataset's records (loaded from ``cfg.data`` when None).
        kinds: score with the class ``names`` and/or their ``descriptions``.
        reuse: reuse a finished seen-only run of the same config in ``run_dir`` (see
            :func:`clef.finetune.finetune`).

    Returns:
        :class:`ZeroShotResult`; ``run_dir/model`` holds the seen-only model.
    """
    from clef.finetune import finetune, resolve_labels, split_records
    from clef.finetuned import load_finetuned
    from clef.prompts import load_prompt_set
    from clef.run_config import resolve_device

    if cfg.method.task != "fer":
        raise UserError("the unseen-expression protocol needs method.task=fer")
    if cfg.method.head == "linear":
        raise UserError(
            "zero-shot needs a text head (method.head=names or descriptions); a linear head has no texts"
        )
    if records is None:
        from clef.data import load_dataset

        records = load_dataset(cfg.data.dataset, cfg.data.root)
    classes = resolve_labels(records, cfg.data, "fer")
    seen_t, unseen_t = split_classes(classes, seen)
    train, test = split_records(records, cfg.data)
    train = seen_training_records(train, seen_t)
    run = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, classes=seen_t))
    result = finetune(
        run,
        progress=progress,
        train_records=train,
        test_records=test[test["expression"].isin(list(seen_t)).fillna(False).astype(bool)],
        reuse=reuse,
    )
    device = resolve_device(cfg.device)
    model, meta = load_finetuned(result.checkpoint, device=device)
    if tuple(meta["labels"]) != seen_t:  # the trained label space is the seen classes, nothing else
        raise AssertionError(f"trained label space {meta['labels']} != seen classes {seen_t}")
    prompt_set = load_prompt_set(cfg.prompt_set)
    scores = []
    for kind in kinds:
        texts, templates = _class_texts(prompt_set, classes, kind)
        scores.append(
            score_fer_texts(
                model.clef,
                test,
                classes,
                texts,
                templates,
                unseen_t,
                "unseen-expressions",
                kind,
                device,
                progress,
            )
        )
    return ZeroShotResult(
        scores=scores,
        train_classes=list(seen_t),
        train_expressions=sorted(str(e) for e in train["expression"].dropna().unique()),
        n_train=result.n_train,
        checkpoint=str(result.checkpoint),
    )


def au_to_fer_protocol(
    model_path: str | Path,
    fer_records: pd.DataFrame,
    classes: Sequence[str] = (),
    prompt_set: str = "labels",
    kinds: Sequence[str] = ("names", "descriptions"),
    device: str = "cpu",
    progress: bool = True,
) -> ZeroShotResult:
    """Score FER images with an AU-only fine-tuned model against expression names / descriptions.

    Args:
        model_path: a stage-2 AU checkpoint (``run_dir/model``); refused if it was trained on FER.
        fer_records: the FER test images (``expression`` column).
        classes: classes to score over (default: the records' own class list, else those present).
    """
    from clef.finetuned import load_finetuned
    from clef.prompts import load_prompt_set

    model, meta = load_finetuned(model_path, device=device)
    if meta.get("task") != "au":
        raise UserError(
            f"{model_path}: the AU-to-FER protocol needs an AU-trained model; "
            f"this one is task {meta.get('task')!r}"
        )
    if not classes:
        classes = tuple(
            fer_records.attrs.get("classes")
            or [e for e in EXPRESSIONS if e in set(fer_records["expression"].dropna())]
        )
    ps = load_prompt_set(prompt_set)
    scores = []
    for kind in kinds:
        texts, templates = _class_texts(ps, classes, kind)
        scores.append(
            score_fer_texts(
                model.clef,
                fer_records,
                classes,
                texts,
                templates,
                classes,
                "au-to-fer",
                kind,
                device,
                progress,
            )
        )
    return ZeroShotResult(
        scores=scores,
        train_classes=[],
        train_expressions=[],
        n_train=int((meta.get("notes") or {}).get("n_train", 0)),
        checkpoint=str(model_path),
    )


def write_zeroshot(result: ZeroShotResult, out: str | Path, title: str = "Zero-shot") -> list[Path]:
    """Write ``zeroshot.json`` and ``zeroshot.md`` (percentages, chance beside every number)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zeroshot.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    lines = [
        f"**{title}** (accuracy %, chance in brackets; "
        f"trained on: {', '.join(result.train_classes) or 'AUs only'})",
        "",
        "| protocol | texts | unseen images, all classes | all images | unseen images, unseen classes only |",
        "|---|---|---|---|---|",
    ]
    for s in result.scores:
        only = (
            "-"
            if s.accuracy_unseen_only is None
            else f"{100 * s.accuracy_unseen_only:.1f} ({100 * s.chance_unseen_only:.1f})"
        )
        lines.append(
            f"| {s.protocol} | {s.texts} | {100 * s.accuracy_unseen:.1f} ({100 * s.chance_unseen:.1f}) "
            f"| {100 * s.accuracy_all:.1f} ({100 * s.chance_all:.1f}) | {only} |"
        )
    (out / "zeroshot.md").write_text("\n".join(lines) + "\n")
    return [out / "zeroshot.json", out / "zeroshot.md"]
