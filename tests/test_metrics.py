"""Metrics against hand-worked examples."""

import numpy as np
import pytest

from clef.metrics import (
    accuracy,
    au_f1,
    au_f1_from_probabilities,
    confusion_matrix,
    macro_f1,
    mean_class_accuracy,
)


def test_au_f1_hand_worked():
    # AU a: tp=2, fp=1, fn=1 -> F1 = 4/6. AU b: never present, never predicted -> 0 (not NaN).
    pred = np.array([[1, 0], [1, 0], [1, 0], [0, 0]])
    target = np.array([[1, 0], [1, 0], [0, 0], [1, 0]])
    np.testing.assert_allclose(au_f1(pred, target), [4 / 6, 0.0])


def test_au_f1_excludes_masked_frames():
    pred = np.array([[1], [1], [0]])
    target = np.array([[1], [0], [1]])
    mask = np.array([[True], [False], [False]])  # only the first frame is coded
    np.testing.assert_allclose(au_f1(pred, target, mask), [1.0])
    assert not np.isnan(au_f1(pred, target, np.zeros_like(mask))).any()


def test_threshold_is_half():
    probabilities = np.array([[0.5], [0.49]])
    np.testing.assert_allclose(au_f1_from_probabilities(probabilities, np.array([[1], [1]])), [2 / 3])


def test_fer_metrics_hand_worked():
    target = np.array([0, 0, 0, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 0])
    assert accuracy(pred, target) == pytest.approx(4 / 6)
    # recalls: class0 2/3, class1 1/1, class2 1/2; class 3 absent from the labels -> excluded
    assert mean_class_accuracy(pred, target, 4) == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    # F1: class0 2*2/(3+3)=2/3; class1 2*1/(2+1)=2/3; class2 2*1/(1+2)=2/3
    assert macro_f1(pred, target, 4) == pytest.approx(2 / 3)
    matrix = confusion_matrix(pred, target, 4)
    assert matrix[0].tolist() == [2, 1, 0, 0] and matrix.sum() == 6
    assert accuracy(np.array([]), np.array([])) == 0.0
