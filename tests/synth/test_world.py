"""Label-level properties of the built-in world (no pixels)."""

import numpy as np
import pytest

from clef.data.folds import load_protocol
from clef.errors import UserError
from clef.labels import ALL_AUS
from clef.synth.emotions import EMOTIONS, PROTOTYPES, sample_expression
from clef.synth.world import (
    ACTIVITIES,
    LAB_SUBJECT_IDS,
    WorldConfig,
    activity_mixture,
    lab_subjects,
    make_video,
    make_wild_image,
    wild_train_count,
)

CONFIG = WorldConfig(lab_subjects=6, frames_per_video=200, wild_images=50)


def test_subject_ids_spread_over_bp4d_folds():
    protocol = load_protocol("bp4d")
    assert len(set(LAB_SUBJECT_IDS)) == 41
    parts = [protocol.part_of(s) for s in LAB_SUBJECT_IDS[:6]]
    assert sorted(parts) == [1, 1, 2, 2, 3, 3]


def test_activity_mixture_is_a_distribution_dominated_by_target():
    for activity in ACTIVITIES:
        mix = activity_mixture(activity, 0.55)
        assert abs(sum(mix.values()) - 1.0) < 1e-9
        assert max(mix, key=mix.get) == activity.target
        assert "neutral" not in mix or mix["neutral"] < mix[activity.target]


def test_expression_sampling_follows_prototypes():
    rng = np.random.default_rng(0)
    for emotion in EMOTIONS:
        mean = np.mean([sample_expression(emotion, rng)[0] for _ in range(300)], axis=0)
        for au, (apex, probability) in PROTOTYPES[emotion].items():
            if probability >= 0.8:  # core AUs show up strongly on average
                assert mean[ALL_AUS.index(au)] > 0.5 * apex * probability, (emotion, au)
        assert np.all(mean >= 0) and np.all(mean <= 5)
    _, side = sample_expression("contempt", rng)
    assert side in ("left", "right")


def test_videos_are_deterministic_smooth_and_mostly_calm():
    subjects = lab_subjects(CONFIG)
    video = make_video(CONFIG, subjects[0], 0, ACTIVITIES[0], 200)
    again = make_video(CONFIG, lab_subjects(CONFIG)[0], 0, ACTIVITIES[0], 200)
    np.testing.assert_array_equal(video.au, again.au)
    assert video.expression == again.expression
    # Neighbouring frames are near duplicates: the median per-frame change is small.
    step = np.abs(np.diff(video.au, axis=0)).max(axis=1)
    assert np.median(step) < 0.5  # episodes reach 5 over 3-8 onset frames; most frames move far less
    assert np.all(np.diff(video.frames) == 1)


def test_tasks_elicit_their_target_emotion_loosely():
    subjects = lab_subjects(CONFIG)
    for activity in ACTIVITIES:
        shown = []
        for s, subject in enumerate(subjects):
            shown += make_video(CONFIG, subject, s, activity, 200).expression
        counts = {e: shown.count(e) for e in set(shown)}
        expressive = {e: n for e, n in counts.items() if e != "neutral"}
        assert counts.get("neutral", 0) > 0.25 * len(shown), activity.task  # many calm frames
        assert max(expressive, key=expressive.get) == activity.target, (activity.task, expressive)
        assert len(expressive) >= 2, activity.task  # other emotions occur too


def test_wild_split_names_and_label_noise():
    config = WorldConfig(wild_images=400, label_noise=0.2)
    items = [make_wild_image(config, i) for i in range(400)]
    n_train = wild_train_count(config)
    assert items[0].name == "train_00001" and items[n_train].name == "test_0001"
    noisy = np.mean([it.label != it.expression for it in items])
    assert 0.1 < noisy < 0.3
    assert make_wild_image(config, 7).au.tolist() == items[7].au.tolist()


def test_calibration_fields_move_the_world_and_are_validated():
    subject = lab_subjects(CONFIG)[0]
    calm = WorldConfig(lab_subjects=6, episode_gap=60.0, lab_strength=(0.5, 0.5))
    busy = WorldConfig(lab_subjects=6, episode_gap=5.0, lab_strength=(1.5, 1.5))
    calm_video = make_video(calm, subject, 0, ACTIVITIES[0], 400)
    busy_video = make_video(busy, subject, 0, ACTIVITIES[0], 400)
    assert calm_video.expression.count("neutral") > busy_video.expression.count("neutral")
    assert busy_video.au.mean() > calm_video.au.mean()

    weak = WorldConfig(wild_images=200, wild_strength=(0.5, 0.5))
    strong = WorldConfig(wild_images=200, wild_strength=(1.6, 1.6))
    weak_au = np.mean([make_wild_image(weak, i).au.sum() for i in range(100)])
    strong_au = np.mean([make_wild_image(strong, i).au.sum() for i in range(100)])
    assert strong_au > 1.5 * weak_au

    for bad in ({"target_share": 1.5}, {"episode_gap": 0.0}, {"wild_strength": (1.2, 0.8)}):
        with pytest.raises(UserError, match=next(iter(bad))):
            WorldConfig(**bad)
