"""Metrics against hand-worked examples, and against scikit-learn on seeded random inputs.

scikit-learn is the independent reference: every reported number goes through :mod:`clef.metrics`,
so each metric must agree with sklearn's implementation of the same definition wherever both are
defined, and the project's own conventions (module docstring) are checked where they differ.
"""

import warnings

import numpy as np
import pytest
from sklearn import metrics as sk

from clef.metrics import (
    AU_THRESHOLD,
    accuracy,
    au_f1,
    au_f1_from_probabilities,
    confusion_matrix,
    macro_f1,
    mean_class_accuracy,
)

# (frames, AUs) for the AU metrics and (samples, classes) for the FER metrics: a single item,
# small and medium sizes, and sizes where classes / AUs are often missing from a sample.
AU_SIZES = [(1, 1), (5, 3), (40, 12), (300, 8), (2000, 12)]
FER_SIZES = [(1, 2), (6, 3), (50, 7), (400, 8), (3000, 8)]
SEEDS = [0, 1, 2]


def _random_au(rng: np.random.Generator, n: int, j: int):
    """Targets, predictions and a coded-mask with a different base rate and coding rate per AU."""
    base_rate = rng.uniform(0.02, 0.6, size=j)
    predicted_rate = rng.uniform(0.0, 0.7, size=j)
    coded_rate = rng.uniform(0.3, 1.0, size=j)
    target = rng.random((n, j)) < base_rate
    pred = rng.random((n, j)) < predicted_rate
    mask = rng.random((n, j)) < coded_rate
    return pred, target, mask


def _sklearn_au_f1(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-AU F1 from sklearn, each AU on its own coded frames only."""
    out = []
    for j in range(target.shape[1]):
        coded = mask[:, j]
        if not coded.any():
            out.append(0.0)  # sklearn refuses empty input; the project's convention is 0
            continue
        out.append(sk.f1_score(target[coded, j], pred[coded, j], pos_label=True, zero_division=0.0))
    return np.array(out)


def _random_fer(rng: np.random.Generator, n: int, c: int):
    """Labels drawn from a skewed class distribution, predictions right about half of the time."""
    prior = rng.dirichlet(np.full(c, 0.7))
    target = rng.choice(c, size=n, p=prior)
    guess = rng.integers(0, c, size=n)
    pred = np.where(rng.random(n) < 0.5, target, guess)
    return pred, target


def _present(target: np.ndarray) -> list[int]:
    return sorted(np.unique(target).tolist())


# ------------------------------------------------------------------------------ hand-worked cases
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


def test_empty_input_gives_zero():
    empty = np.array([], dtype=np.int64)
    assert mean_class_accuracy(empty, empty, 3) == 0.0
    assert macro_f1(empty, empty, 3) == 0.0
    assert confusion_matrix(empty, empty, 3).tolist() == [[0] * 3] * 3
    np.testing.assert_array_equal(au_f1(np.zeros((0, 4)), np.zeros((0, 4))), np.zeros(4))


def test_au_with_no_positive_and_no_prediction_scores_zero():
    # Every coded label of AU b is negative and it is never predicted: 0, and it lowers the mean.
    pred = np.array([[1, 0], [0, 0], [1, 0]])
    target = np.array([[1, 0], [0, 0], [1, 0]])
    f1 = au_f1(pred, target)
    assert f1.tolist() == [1.0, 0.0]
    assert f1.mean() == 0.5


def test_au_f1_ignores_the_value_under_a_mask():
    # What sits under a mask (BP4D's 9, a NaN that became 0 or 1) must not change any F1.
    rng = np.random.default_rng(7)
    pred, target, mask = _random_au(rng, 200, 6)
    reference = au_f1(pred, target, mask)
    for filler in (0, 1):
        filled = np.where(mask, target, filler)
        np.testing.assert_array_equal(au_f1(pred, filled, mask), reference)
    np.testing.assert_array_equal(au_f1(np.where(mask, pred, ~pred), target, mask), reference)


# ------------------------------------------------------------------------- against scikit-learn
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "j"), AU_SIZES)
def test_au_f1_matches_sklearn_per_au_on_coded_frames(n, j, seed):
    rng = np.random.default_rng([seed, n, j])
    pred, target, mask = _random_au(rng, n, j)
    np.testing.assert_allclose(
        au_f1(pred, target, mask), _sklearn_au_f1(pred, target, mask), rtol=0, atol=1e-12
    )
    # Without a mask every frame counts.
    expected = _sklearn_au_f1(pred, target, np.ones_like(mask))
    np.testing.assert_allclose(au_f1(pred, target), expected, rtol=0, atol=1e-12)
    if j > 1:  # sklearn reads a single column as a binary problem, not as a multi-label one
        multilabel = sk.f1_score(target, pred, average=None, zero_division=0.0)
        np.testing.assert_allclose(au_f1(pred, target), multilabel, rtol=0, atol=1e-12)


def test_au_f1_matches_sklearn_with_degenerate_aus():
    # Columns: all coded labels negative and never predicted; all positive; everything masked;
    # predicted everywhere; a single coded frame.
    rng = np.random.default_rng(11)
    n = 60
    target = np.stack(
        [np.zeros(n, bool), np.ones(n, bool), rng.random(n) < 0.5, rng.random(n) < 0.3, rng.random(n) < 0.5],
        axis=1,
    )
    pred = np.stack(
        [np.zeros(n, bool), rng.random(n) < 0.5, rng.random(n) < 0.5, np.ones(n, bool), target[:, 4]], axis=1
    )
    mask = np.ones_like(target)
    mask[:, 2] = False
    mask[:, 4] = False
    mask[17, 4] = True
    got = au_f1(pred, target, mask)
    np.testing.assert_allclose(got, _sklearn_au_f1(pred, target, mask), rtol=0, atol=1e-12)
    assert got[0] == 0.0 and got[2] == 0.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "j"), AU_SIZES)
def test_au_f1_from_probabilities_matches_sklearn_at_half(n, j, seed):
    rng = np.random.default_rng([seed, n, j, 1])
    _, target, mask = _random_au(rng, n, j)
    probabilities = rng.random((n, j))
    probabilities[rng.random((n, j)) < 0.1] = AU_THRESHOLD  # exactly 0.5 counts as present
    expected = _sklearn_au_f1(probabilities >= 0.5, target, mask)
    np.testing.assert_allclose(au_f1_from_probabilities(probabilities, target, mask), expected, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "c"), FER_SIZES)
def test_accuracy_matches_sklearn(n, c, seed):
    pred, target = _random_fer(np.random.default_rng([seed, n, c]), n, c)
    assert accuracy(pred, target) == pytest.approx(sk.accuracy_score(target, pred), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "c"), FER_SIZES)
def test_confusion_matrix_matches_sklearn(n, c, seed):
    pred, target = _random_fer(np.random.default_rng([seed, n, c]), n, c)
    # Rows = true class, columns = predicted class, as sklearn's (y_true, y_pred) order gives.
    expected = sk.confusion_matrix(target, pred, labels=list(range(c)))
    np.testing.assert_array_equal(confusion_matrix(pred, target, c), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "c"), FER_SIZES)
def test_mean_class_accuracy_matches_sklearn(n, c, seed):
    pred, target = _random_fer(np.random.default_rng([seed, n, c]), n, c)
    ours = mean_class_accuracy(pred, target, c)
    # Per-class recall averaged over the classes present in the targets (module docstring).
    recalls = sk.recall_score(target, pred, labels=_present(target), average=None, zero_division=0.0)
    assert ours == pytest.approx(recalls.mean(), abs=1e-12)
    with warnings.catch_warnings():
        # sklearn warns when predictions hold a class the targets lack; it then ignores that class,
        # which is the convention checked here.
        warnings.simplefilter("ignore", UserWarning)
        assert ours == pytest.approx(sk.balanced_accuracy_score(target, pred), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "c"), FER_SIZES)
def test_macro_f1_matches_sklearn_over_present_classes(n, c, seed):
    pred, target = _random_fer(np.random.default_rng([seed, n, c]), n, c)
    expected = sk.f1_score(target, pred, labels=_present(target), average="macro", zero_division=0.0)
    assert macro_f1(pred, target, c) == pytest.approx(expected, abs=1e-12)


def test_fer_metrics_with_classes_absent_from_the_targets():
    # 6 classes; classes 1 and 4 never occur in the targets, class 4 is still predicted (wrongly).
    rng = np.random.default_rng(3)
    target = rng.choice([0, 2, 3, 5], size=500)
    pred = np.where(rng.random(500) < 0.6, target, rng.integers(0, 6, size=500))
    assert (pred == 4).any() and not (target == 4).any()
    present = [0, 2, 3, 5]
    expected_f1 = sk.f1_score(target, pred, labels=present, average="macro", zero_division=0.0)
    assert macro_f1(pred, target, 6) == pytest.approx(expected_f1, abs=1e-12)
    # The convention: absent classes are left out of the mean. sklearn's default label set (the
    # union of targets and predictions) would count class 4 with F1 = 0 and give a lower number.
    union = sk.f1_score(target, pred, average="macro", zero_division=0.0)
    assert union < macro_f1(pred, target, 6)
    recalls = sk.recall_score(target, pred, labels=present, average=None, zero_division=0.0)
    assert mean_class_accuracy(pred, target, 6) == pytest.approx(recalls.mean(), abs=1e-12)
    matrix = confusion_matrix(pred, target, 6)
    assert matrix[[1, 4]].sum() == 0 and matrix[:, 4].sum() == (pred == 4).sum()
