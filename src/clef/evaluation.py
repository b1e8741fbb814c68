"""Evaluation results: compute them from predictions, write them as JSON, CSV, markdown and plots.

Metric conventions are those of :mod:`clef.metrics`. Every result carries the names of its AUs or
classes, so files never depend on a class order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: figures go to files, global state stays untouched

from clef.metrics import (
    accuracy,
    au_f1_from_probabilities,
    confusion_matrix,
    macro_f1,
    mean_class_accuracy,
)


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


def au_table(result: AUResult) -> pd.DataFrame:
    rows = [
        {"AU": f"AU{a}", "F1": f, "base_rate": r, "n_coded": n}
        for a, f, r, n in zip(result.aus, result.f1, result.base_rate, result.n_coded, strict=True)
    ]
    rows.append({"AU": "mean", "F1": result.mean_f1, "base_rate": np.nan, "n_coded": np.nan})
    return pd.DataFrame(rows)


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
    fig = Figure(figsize=(max(4, 0.55 * len(result.aus) + 1.5), 3.2))
    ax = fig.subplots()
    x = np.arange(len(result.aus))
    ax.bar(x, 100 * np.asarray(result.f1), color="#4c72b0", label="F1")
    ax.plot(x, 100 * np.asarray(result.base_rate), "k_", markersize=14, label="base rate")
    ax.axhline(100 * result.mean_f1, color="#c44e52", lw=1, ls="--", label=f"mean {100 * result.mean_f1:.1f}")
    ax.set_xticks(x, [f"AU{a}" for a in result.aus], rotation=45)
    ax.set_ylim(0, 100)
    ax.set_ylabel("F1 x 100")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(paths[3], dpi=120)
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
    matrix = np.asarray(result.confusion, dtype=np.float64)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.0 + 0.6 * len(result.classes), 0.8 + 0.6 * len(result.classes)))
    ax = fig.subplots()
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(result.classes)):
        for j in range(len(result.classes)):
            color = "white" if rows[i, j] > 0.5 else "black"
            ax.text(j, i, f"{100 * rows[i, j]:.0f}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(result.classes)), result.classes, rotation=45, ha="right")
    ax.set_yticks(range(len(result.classes)), result.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (row %)")
    ax.set_title(f"{title}: acc {100 * result.accuracy:.1f}")
    fig.tight_layout()
    fig.savefig(paths[3], dpi=120)
    return paths
