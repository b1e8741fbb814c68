"""Benchmark metrics as pure NumPy functions (arrays in, numbers out).

Conventions (docs/datasets.md):

- **AU detection**: binary F1 of the *positive* class per AU, at probability threshold 0.5 (never tuned
  on the test fold), pooled over all test frames of a fold; frames whose label is not coded (BP4D's
  9, masked) are excluded for that AU only; the benchmark number is the mean over AUs, then over folds.
  DISFA counts an AU present at intensity >= 2 (the loader applies it; metrics see 0/1 labels).
- An AU with no positive label and no positive prediction has F1 = 0 (not NaN, not 1): the mean
  over AUs stays defined and a detector gets no credit for an AU it was never shown.
- **FER**: overall accuracy on the official test split; mean class accuracy (average of per-class
  recall over the classes present in the test labels); macro-F1 over the same classes. Classes are
  indices into an explicit, named class list; never compare indices across datasets.
"""

from __future__ import annotations

import numpy as np

AU_THRESHOLD = 0.5


def au_f1(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-AU F1 of the positive class.

    ``pred`` and ``target``: (N, J) arrays of 0/1 (bool or numbers); ``mask``: (N, J) bool, True where
    the label is coded (default: all). Returns (J,) float64 F1 scores in [0, 1].
    """
    pred = np.asarray(pred).astype(bool)
    target = np.asarray(target).astype(bool)
    mask = np.ones_like(target) if mask is None else np.asarray(mask, dtype=bool)
    if not pred.shape == target.shape == mask.shape:
        raise ValueError(f"shapes differ: pred {pred.shape}, target {target.shape}, mask {mask.shape}")
    tp = (pred & target & mask).sum(axis=0)
    fp = (pred & ~target & mask).sum(axis=0)
    fn = (~pred & target & mask).sum(axis=0)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0).astype(np.float64)


def au_f1_from_probabilities(
    probabilities: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Per-AU F1 after thresholding probabilities at :data:`AU_THRESHOLD` (0.5)."""
    return au_f1(np.asarray(probabilities) >= AU_THRESHOLD, target, mask)


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Share of correct class predictions; 0.0 for empty input."""
    pred, target = np.asarray(pred), np.asarray(target)
    return float((pred == target).mean()) if target.size else 0.0


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts; rows = true class, columns = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(target, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return matrix


def mean_class_accuracy(pred: np.ndarray, target: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``target``; 0.0 when none are."""
    matrix = confusion_matrix(pred, target, n_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    return float((np.diag(matrix)[present] / support[present]).mean()) if present.any() else 0.0


def macro_f1(pred: np.ndarray, target: np.ndarray, n_classes: int) -> float:
    """Mean one-vs-rest F1 over the classes present in ``target``; 0.0 when none are."""
    matrix = confusion_matrix(pred, target, n_classes)
    tp = np.diag(matrix)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)  # = 2tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    present = matrix.sum(axis=1) > 0
    return float(f1[present].mean()) if present.any() else 0.0
