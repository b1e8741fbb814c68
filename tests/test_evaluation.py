"""Evaluation results and their files."""

import json

import numpy as np
import pandas as pd

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
