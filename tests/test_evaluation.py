"""Evaluation results and their files; the numbers against scikit-learn."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from clef.evaluation import evaluate_au, evaluate_fer, write_au_result, write_fer_result


def test_au_result_files(tmp_path):
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.7]])
    targets = np.array([[1, 0], [0, 0], [1, 1]])
    mask = np.array([[True, True], [True, False], [True, True]])
    result = evaluate_au(probabilities, targets, mask, [1, 12])
    assert result.f1 == [0.5, 1.0] and result.n_coded == [3, 2]
    paths = write_au_result(result, tmp_path)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert json.loads(paths[0].read_text())["mean_f1"] == 0.75
    assert list(pd.read_csv(paths[1])["AU"]) == ["AU1", "AU12", "mean"]
    assert "| 50.0 | 100.0 | 75.0 |" in paths[2].read_text()


def test_fer_result_files(tmp_path):
    result = evaluate_fer(np.array([0, 1, 1]), np.array([0, 1, 0]), ["neutral", "happiness"])
    assert result.confusion == [[1, 1], [0, 1]]
    paths = write_fer_result(result, tmp_path)
    table = pd.read_csv(paths[1], index_col=0)
    assert list(table.columns) == ["neutral", "happiness"]
    assert "| 66.67 |" in paths[2].read_text()


def test_evaluate_au_matches_sklearn():
    rng = np.random.default_rng(0)
    n, aus = 400, [1, 2, 4, 6, 12, 25]
    probabilities = rng.random((n, len(aus)))
    targets = (rng.random((n, len(aus))) < rng.uniform(0.05, 0.5, len(aus))).astype(np.float32)
    mask = rng.random((n, len(aus))) < 0.8
    targets[~mask] = 9  # what sits under the mask must not count
    result = evaluate_au(probabilities, targets, mask, aus)
    assert result.aus == aus
    for j in range(len(aus)):
        coded = mask[:, j]
        y = targets[coded, j].astype(bool)
        assert result.f1[j] == pytest.approx(f1_score(y, probabilities[coded, j] >= 0.5), abs=1e-12)
        assert result.base_rate[j] == pytest.approx(y.mean(), abs=1e-12)
        assert result.n_coded[j] == coded.sum()
    assert result.mean_f1 == pytest.approx(np.mean(result.f1), abs=1e-12)


def test_evaluate_fer_matches_sklearn():
    rng = np.random.default_rng(1)
    classes = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"]
    target = rng.choice(6, size=500)  # "fear" (index 6) never occurs in the labels
    pred = np.where(rng.random(500) < 0.6, target, rng.integers(0, 7, size=500))
    result = evaluate_fer(pred, target, classes)
    present = sorted(set(target.tolist()))
    assert result.classes == classes
    assert result.accuracy == pytest.approx(accuracy_score(target, pred), abs=1e-12)
    recalls = recall_score(target, pred, labels=present, average=None, zero_division=0.0)
    assert result.mean_class_accuracy == pytest.approx(recalls.mean(), abs=1e-12)
    expected_f1 = f1_score(target, pred, labels=present, average="macro", zero_division=0.0)
    assert result.macro_f1 == pytest.approx(expected_f1, abs=1e-12)
    assert result.confusion == confusion_matrix(target, pred, labels=list(range(7))).tolist()
