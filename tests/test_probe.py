"""Linear probes: sane scores on a tiny world with a random model, no subject leakage, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from clef.cli import main
from clef.errors import UserError
from clef.model import build_model
from clef.probe import (
    ProbeConfig,
    extract_features,
    load_probe_records,
    probe_features,
    probe_model,
    subject_split,
    subsample_frames,
)

BACKBONE = {"image_encoder": "cnn", "cnn_widths": [8, 16], "image_size": 32}


@pytest.fixture(scope="module")
def world(tiny_world):
    return tiny_world / "bp4d"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("offline", BACKBONE, pretrained=False)


def test_random_model_probe_is_sane(world, model):
    cfg = ProbeConfig(root=str(world), fold=1, progress=False)
    train, test = load_probe_records(cfg)
    assert set(train["subject"]).isdisjoint(set(test["subject"]))
    result = probe_model(model, cfg, records=(train, test))
    for value in (
        result.au_f1,
        result.expression_accuracy,
        result.subject_accuracy,
        *result.au_f1_per_au.values(),
    ):
        assert value is not None and 0.0 <= value <= 1.0
    assert len(result.au_f1_per_au) == 12
    assert result.train_subjects == 4 and result.test_subjects == 2
    assert result.subject_chance == pytest.approx(0.5)
    assert 0.0 <= result.subject_nn_accuracy <= 1.0
    assert result.n_train == len(train) and result.n_test == len(test)
    assert "AU F1" in result.summary()


def test_probe_refuses_subject_leakage(world, model):
    cfg = ProbeConfig(root=str(world), fold=1, progress=False)
    train, test = load_probe_records(cfg)
    leaked = pd.concat([train, test.iloc[:3]], ignore_index=True)
    f_train = np.zeros((len(leaked), 4), dtype=np.float32)
    f_test = np.zeros((len(test), 4), dtype=np.float32)
    with pytest.raises(UserError, match="share subjects"):
        probe_features(f_train, leaked, f_test, test, cfg)


def test_features_are_batched_frozen_and_ordered(world, model):
    cfg = ProbeConfig(root=str(world), fold=1, progress=False)
    _, test = load_probe_records(cfg)
    a = extract_features(model, test, batch_size=7, progress=False)
    b = extract_features(model, test.iloc[::-1].reset_index(drop=True), batch_size=64, progress=False)
    assert a.shape == (len(test), model.image_tower.embed_dim)
    np.testing.assert_allclose(a, b[::-1], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)


def test_subject_split_uses_different_videos():
    records = pd.DataFrame(
        {
            "subject": ["A"] * 4 + ["B"] * 4 + ["C"] * 2,
            "activity": ["T1", "T1", "T2", "T3"] * 2 + ["T1", "T1"],
        }
    )
    fit, score = subject_split(records)
    assert not (fit & score).any()
    for s in ("A", "B"):
        rows = records["subject"] == s
        assert set(records.loc[rows & fit, "activity"]).isdisjoint(records.loc[rows & score, "activity"])
    assert not (fit | score)[records["subject"] == "C"].any()  # one video only: left out


def test_subsample_frames_keeps_every_nth_frame_per_video():
    records = pd.DataFrame(
        {"subject": ["A"] * 6, "activity": ["T1"] * 3 + ["T2"] * 3, "frame": [3, 1, 2, 1, 2, 3]}
    )
    kept = subsample_frames(records, 2)
    assert sorted(zip(kept["activity"], kept["frame"], strict=True)) == [
        ("T1", 1),
        ("T1", 3),
        ("T2", 1),
        ("T2", 3),
    ]
    with pytest.raises(UserError):
        subsample_frames(records, 0)


def test_cli_probe_random_init_writes_json(world, tmp_path, capsys):
    argv = [
        "probe",
        "random",
        "--random-init",
        "offline",
        "--backbone-config",
        "{image_encoder: cnn, cnn_widths: [8, 16], image_size: 32}",
        "--root",
        str(world),
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main(argv) == 0
    assert "AU F1" in capsys.readouterr().out
    payload = json.loads((tmp_path / "probe.json").read_text())
    assert payload["model"] == "random:offline" and 0.0 <= payload["au_f1"] <= 1.0
    assert main(["probe", "--root", str(world)]) == 2  # neither a checkpoint nor --random-init


def test_cli_probe_of_a_checkpoint_matches_the_library(world, model, tmp_path, capsys):
    from clef.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "stage1", model, task="pretrain")
    assert (
        main(["probe", str(tmp_path / "stage1"), "--root", str(world), "--out", str(tmp_path), "--quiet"])
        == 0
    )
    payload = json.loads((tmp_path / "probe.json").read_text())
    expected = probe_model(model, ProbeConfig(root=str(world), fold=1, progress=False))
    assert payload["au_f1"] == pytest.approx(expected.au_f1)
    assert payload["subject_accuracy"] == pytest.approx(expected.subject_accuracy)
    assert main(["probe", str(tmp_path / "stage1"), "--random-init", "offline", "--root", str(world)]) == 2


def test_embedding_spread_of_known_clouds():
    from clef.probe import embedding_spread

    rng = np.random.default_rng(0)
    one_point = np.tile(rng.normal(size=(1, 16)), (50, 1))
    collapsed = embedding_spread(one_point + 1e-9 * rng.normal(size=(50, 16)))
    assert collapsed["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    isotropic = embedding_spread(rng.normal(size=(4000, 16)))
    assert abs(isotropic["mean_cosine"]) < 0.01 and 15.0 < isotropic["effective_rank"] <= 16.0
    line = embedding_spread(np.outer(rng.normal(size=200), rng.normal(size=16)))
    assert line["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    cross = np.concatenate([np.eye(2), -np.eye(2)] * 25)  # +-e0, +-e1: centred, 2 equal variances
    two_axes = embedding_spread(np.concatenate([cross, np.zeros((100, 14))], axis=1))
    assert two_axes["effective_rank"] == pytest.approx(2.0, abs=1e-6)


def test_variance_share_is_the_anova_r2():
    from clef.probe import variance_share

    rng = np.random.default_rng(1)
    groups = np.repeat(np.array(["a", "b", "c"]), 40)
    centres = {"a": 0.0, "b": 3.0, "c": -3.0}
    f = np.stack([[centres[g] + rng.normal(), rng.normal()] for g in groups])
    # By hand: the between-group sum of squares over the total, per dimension, summed.
    grand = f.mean(axis=0)
    between = sum(40 * ((f[groups == g].mean(axis=0) - grand) ** 2).sum() for g in "abc")
    total = ((f - grand) ** 2).sum()
    assert variance_share(f, groups) == pytest.approx(between / total)
    assert 0.7 < variance_share(f, groups) < 1.0
    assert variance_share(rng.normal(size=(120, 4)), groups) < 0.05  # groups that explain nothing
    assert variance_share(f, np.array(["a"] * 120)) is None
    with_missing = groups.astype(object)
    with_missing[:40] = None
    assert variance_share(f, with_missing) == pytest.approx(variance_share(f[40:], groups[40:]))
