"""Evaluation results: compute them from predictions, write them as JSON, CSV, markdown and plots.

Metric conventions are those of :mod:`clef.metrics`. Every result carries the names of its AUs or
classes, so files never depend on a class order. The figures here (per-AU F1 bars, confusion
matrices) take one result or several named ones, so the experiment reports draw with the same code;
:func:`mean_std` is the one "mean ± std" formatter of every report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: figures go to files, global state stays untouched

from clef.errors import UserError
from clef.metrics import (
    accuracy,
    au_f1_from_probabilities,
    confusion_matrix,
    macro_f1,
    mean_class_accuracy,
)

if TYPE_CHECKING:
    from clef.inference import Predictions


@dataclass
class AUResult:
    """Per-AU F1 (threshold 0.5, masked frames excluded) and their mean."""

    aus: list[int]
    f1: list[float]
    base_rate: list[float]  # share of positive labels among coded test frames
    n_coded: list[int]

    @property
    def mean_f1(self) -> float:
        return float(np.mean(self.f1)) if self.f1 else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"mean_f1": self.mean_f1}


@dataclass
class FERResult:
    """FER accuracy, mean class accuracy, macro-F1 and the confusion matrix (rows = truth)."""

    classes: list[str]
    accuracy: float
    mean_class_accuracy: float
    macro_f1: float
    confusion: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_au(probabilities: np.ndarray, targets: np.ndarray, mask: np.ndarray, aus) -> AUResult:
    """``probabilities``, ``targets``, ``mask``: (N, J) arrays for the J AUs in ``aus``."""
    f1 = au_f1_from_probabilities(probabilities, targets, mask)
    coded = mask.sum(axis=0)
    positives = (np.asarray(targets, bool) & mask).sum(axis=0)
    rate = np.where(coded > 0, positives / np.maximum(coded, 1), 0.0)
    return AUResult(list(map(int, aus)), f1.tolist(), rate.tolist(), coded.astype(int).tolist())


def evaluate_fer(pred: np.ndarray, target: np.ndarray, classes) -> FERResult:
    """``pred``, ``target``: (N,) class indices into ``classes``."""
    n = len(classes)
    return FERResult(
        classes=list(classes),
        accuracy=accuracy(pred, target),
        mean_class_accuracy=mean_class_accuracy(pred, target, n),
        macro_f1=macro_f1(pred, target, n),
        confusion=confusion_matrix(pred, target, n).tolist(),
    )


def evaluate_predictions(predictions: Predictions, records: pd.DataFrame) -> AUResult | FERResult:
    """Metrics of ``predictions`` against the labels of ``records`` (same rows, same order).

    AU labels: per-AU F1 at 0.5 with uncoded labels excluded. One-of-C expression labels: accuracy,
    mean class accuracy, macro-F1, confusion; every record must carry one of the predicted classes.

    Raises:
        UserError: a needed AU column is missing, a record's expression is not a predicted class, or
            the label space has no ground truth in a record table (independent non-AU labels).
    """
    from clef.data.records import au_targets
    from clef.labels import au_column

    space = predictions.space
    if len(records) != len(predictions.probabilities):
        raise ValueError(f"{len(records)} records but {len(predictions.probabilities)} predictions")
    if space.is_au:
        missing = [a for a in space.aus if au_column(a) not in records.columns]
        if missing:
            raise UserError(f"the records have no labels for AU {missing}")
        targets, mask = au_targets(records, space.aus)
        return evaluate_au(predictions.probabilities, targets, mask, space.aus)
    if space.multi_label:
        raise UserError("independent labels other than AUs have no ground truth in a record table")
    lookup = {name: k for k, name in enumerate(space.ids)}
    expressions = records["expression"].astype(object).where(records["expression"].notna(), None)
    unknown = sorted({str(e) for e in expressions if e not in lookup})
    if unknown:
        raise UserError(
            f"records carry expressions {unknown} that the model does not predict "
            f"(its classes: {', '.join(space.ids)}); select matching records first"
        )
    target = np.array([lookup[e] for e in expressions], dtype=np.int64)
    return evaluate_fer(predictions.predicted_classes(), target, space.ids)


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """``"m ± s"`` (sample std, ``ddof=1``) of ``values`` × ``scale``; one value alone, ``-`` for none.

    NaN entries are ignored; every report in the project formats its spreads with this.
    """
    v = scale * np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def au_table(result: AUResult) -> pd.DataFrame:
    rows = [
        {"AU": f"AU{a}", "F1": f, "base_rate": r, "n_coded": n}
        for a, f, r, n in zip(result.aus, result.f1, result.base_rate, result.n_coded, strict=True)
    ]
    rows.append({"AU": "mean", "F1": result.mean_f1, "base_rate": np.nan, "n_coded": np.nan})
    return pd.DataFrame(rows)


_COLOURS = ("#4c72b0", "#8c8c8c", "#dd8452", "#55a868", "#c44e52", "#8172b3")


def plot_au_f1(results: Mapping[str, AUResult], path: Path, title: str = "AU detection") -> Path:
    """Per-AU F1 bars, one colour per named result (same AUs), the base rate of each AU as a tick."""

    names = list(results)
    first = results[names[0]]
    aus = first.aus
    fig = Figure(figsize=(max(5, (0.4 + 0.2 * len(names)) * len(aus) + 1.5), 3.4))
    ax = fig.subplots()
    x = np.arange(len(aus))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        r = results[name]
        if r.aus != aus:
            raise ValueError(f"results {names[0]!r} and {name!r} are over different AUs")
        offset = (k - (len(names) - 1) / 2) * width
        ax.bar(
            x + offset,
            100 * np.asarray(r.f1),
            width,
            color=_COLOURS[k % len(_COLOURS)],
            label=f"{name} (mean {100 * r.mean_f1:.1f})",
        )
    ax.plot(x, 100 * np.asarray(first.base_rate), "k_", markersize=14, label="base rate")
    ax.set_xticks(x, [f"AU{a}" for a in aus], rotation=45)
    ax.set_ylim(0, 100)
    ax.set_ylabel("F1 x 100 (threshold 0.5)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_confusions(
    results: Mapping[str, FERResult], path: Path, title: str = "Expression recognition"
) -> Path:
    """Row-normalised confusion matrices (%), one panel per named result (same classes)."""

    names = list(results)
    classes = results[names[0]].classes
    n = len(classes)
    fig = Figure(figsize=(0.8 + (0.6 * n + 0.6) * len(names), 1.4 + 0.6 * n))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for k, (ax, name) in enumerate(zip(axes, names, strict=True)):
        r = results[name]
        if r.classes != classes:
            raise ValueError(f"results {names[0]!r} and {name!r} are over different classes")
        m = np.asarray(r.confusion, dtype=np.float64)
        rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                colour = "white" if rows[i, j] > 0.5 else "black"
                ax.text(j, i, f"{100 * rows[i, j]:.0f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes if k == 0 else [""] * n, fontsize=8)
        ax.set_xlabel("predicted")
        prefix = f"{name}: " if len(names) > 1 else ""
        ax.set_title(f"{prefix}accuracy {100 * r.accuracy:.1f} %", fontsize=9)
    axes[0].set_ylabel("true (row %)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def write_au_result(result: AUResult, out: Path, title: str = "AU detection") -> list[Path]:
    """Write ``au_f1.json``, ``au_f1.csv``, ``au_f1.md`` and ``au_f1.png`` (per-AU bars) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table = au_table(result)
    paths = [out / "au_f1.json", out / "au_f1.csv", out / "au_f1.md", out / "au_f1.png"]
    paths[0].write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    table.to_csv(paths[1], index=False)
    header = "| " + " | ".join(table["AU"]) + " |"
    rule = "|" + "---|" * len(table)
    values = "| " + " | ".join(f"{100 * v:.1f}" for v in table["F1"]) + " |"
    paths[2].write_text(f"**{title}** (F1 x 100, threshold 0.5)\n\n{header}\n{rule}\n{values}\n")
    plot_au_f1({"F1": result}, paths[3], title)
    return paths


def write_fer_result(result: FERResult, out: Path, title: str = "Expression recognition") -> list[Path]:
    """Write ``fer.json``, ``fer_confusion.csv``, ``fer.md`` and ``fer_confusion.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "fer.json", out / "fer_confusion.csv", out / "fer.md", out / "fer_confusion.png"]
    paths[0].write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    confusion = pd.DataFrame(result.confusion, index=result.classes, columns=result.classes)
    confusion.to_csv(paths[1], index_label="true \\ predicted")
    paths[2].write_text(
        f"**{title}**\n\n| accuracy | mean class accuracy | macro-F1 |\n|---|---|---|\n"
        f"| {100 * result.accuracy:.2f} | {100 * result.mean_class_accuracy:.2f} "
        f"| {100 * result.macro_f1:.2f} |\n"
    )
    plot_confusions({"": result}, paths[3], title)
    return paths


def write_result(result: AUResult | FERResult, out: Path, title: str) -> list[Path]:
    """Write an AU or FER result as JSON + CSV + markdown + plot."""
    if isinstance(result, AUResult):
        return write_au_result(result, Path(out), title=title)
    return write_fer_result(result, Path(out), title=title)


def result_from_dict(data: Mapping, is_au: bool) -> AUResult | FERResult:
    """Rebuild a result from its :meth:`to_dict` form (e.g. a checkpoint sidecar's metrics)."""
    if is_au:
        return AUResult(list(data["aus"]), list(data["f1"]), list(data["base_rate"]), list(data["n_coded"]))
    return FERResult(
        **{k: data[k] for k in ("classes", "accuracy", "mean_class_accuracy", "macro_f1", "confusion")}
    )
