"""AU geometry: every AU moves its landmarks monotonically in the FACS direction, and only those."""

import numpy as np
import pytest

from clef.errors import UserError
from clef.labels import ALL_AUS
from clef.synth.face import AU_INDEX, N_LID, N_LIP, face_geometry
from clef.synth.identity import sample_identity

MID_LID = N_LID // 2
MID_LIP = N_LIP // 2


def _identities():
    rng = np.random.default_rng(3)
    return [sample_identity(rng, "lab") for _ in range(3)] + [sample_identity(rng, "wild")]


def _geo(identity, au, value, unilateral=None):
    a = np.zeros(len(ALL_AUS))
    a[AU_INDEX[au]] = value
    return face_geometry(identity, a, unilateral)


def _red(g):
    # total height of the lip red at the centre
    return (g.lip_upper_inner[MID_LIP, 1] - g.lip_upper_outer[MID_LIP, 1]) + (
        g.lip_lower_outer[MID_LIP, 1] - g.lip_lower_inner[MID_LIP, 1]
    )


# Quantities that must grow strictly with the AU's intensity (y grows downward, so "up" is -y).
MEASURES = {
    1: [lambda g: -g.brows[:, 0, 1].mean(), lambda g: g.forehead_strength[4]],
    2: [lambda g: -g.brows[:, -1, 1].mean(), lambda g: g.forehead_strength[0]],
    4: [
        lambda g: g.brows[:, 0, 1].mean(),
        lambda g: -np.abs(g.brows[:, 0, 0]).mean(),
        lambda g: g.glabella_strength,
    ],
    5: [lambda g: -g.eye_upper[:, MID_LID, 1].mean()],
    6: [
        lambda g: -g.cheeks[:, 1].mean(),
        lambda g: -g.eye_lower[:, MID_LID, 1].mean(),
        lambda g: g.crows_feet_strength.mean(),
    ],
    7: [
        lambda g: -g.eye_lower[:, MID_LID, 1].mean(),
        lambda g: -(g.eye_lower[:, MID_LID, 1] - g.eye_upper[:, MID_LID, 1]).mean(),
    ],
    9: [lambda g: -g.nostrils[:, 1].mean(), lambda g: g.nose_wrinkle_strength],
    10: [lambda g: -g.lip_upper_outer[MID_LIP, 1], lambda g: -g.lip_upper_inner[MID_LIP, 1]],
    12: [lambda g: -g.mouth_corners[:, 1].mean(), lambda g: np.abs(g.mouth_corners[:, 0]).mean()],
    14: [lambda g: -np.abs(g.mouth_corners[:, 0]).mean(), lambda g: g.dimple_strength.mean()],
    15: [lambda g: g.mouth_corners[:, 1].mean()],
    17: [lambda g: -g.lip_lower_outer[MID_LIP, 1], lambda g: g.chin_strength],
    20: [lambda g: np.abs(g.mouth_corners[:, 0]).mean()],
    23: [lambda g: -_red(g)],
    24: [lambda g: -_red(g), lambda g: g.lip_press],
    25: [lambda g: g.mouth_gap],
    26: [lambda g: g.chin[1], lambda g: g.jaw_drop, lambda g: g.mouth_gap],
}

# Landmark groups that an AU of each region must leave untouched.
UPPER = ("brows", "eye_upper", "eye_lower", "iris_centre")
LOWER = ("lip_upper_outer", "lip_upper_inner", "lip_lower_inner", "lip_lower_outer", "mouth_corners", "chin")
UNMOVED = {
    1: LOWER + ("eye_upper", "eye_lower"),
    2: LOWER + ("eye_upper", "eye_lower"),
    4: LOWER + ("eye_upper",),
}
UNMOVED.update({au: LOWER + ("brows",) for au in (5, 6, 7)})
UNMOVED[9] = ("brows", "eye_upper", "eye_lower", "mouth_corners", "chin")
UNMOVED.update({au: UPPER for au in (10, 12, 14, 15, 17, 20, 23, 24, 25, 26)})


def test_every_au_has_a_measure_and_a_locality_rule():
    assert set(MEASURES) == set(ALL_AUS)
    assert set(UNMOVED) == set(ALL_AUS)


@pytest.mark.parametrize("au", ALL_AUS)
def test_au_geometry_is_strictly_monotonic_in_intensity(au):
    for identity in _identities():
        geos = [_geo(identity, au, v) for v in range(6)]
        for k, measure in enumerate(MEASURES[au]):
            values = np.array([measure(g) for g in geos])
            steps = np.diff(values)
            assert np.all(steps > 1e-4), f"AU{au} measure {k}: {values}"


@pytest.mark.parametrize("au", ALL_AUS)
def test_au_is_local(au):
    identity = _identities()[0]
    g0, g5 = _geo(identity, au, 0), _geo(identity, au, 5)
    for name in UNMOVED[au]:
        assert np.allclose(getattr(g0, name), getattr(g5, name)), f"AU{au} moved {name}"


def test_intensity_two_moves_landmarks_at_least_a_pixel_at_64():
    # one canonical unit is 32 pixels at 64x64 (before the renderer's small zoom)
    identity = _identities()[0]
    main = {
        1: lambda g: g.brows[:, 0, 1],
        2: lambda g: g.brows[:, -1, 1],
        4: lambda g: g.brows[:, 0],
        5: lambda g: g.eye_upper[:, MID_LID, 1],
        7: lambda g: g.eye_lower[:, MID_LID, 1],
        10: lambda g: g.lip_upper_outer[MID_LIP],
        12: lambda g: g.mouth_corners,
        15: lambda g: g.mouth_corners,
        17: lambda g: g.lip_lower_outer[MID_LIP],
        20: lambda g: g.mouth_corners,
        25: lambda g: g.mouth_gap,
        26: lambda g: g.chin,
    }
    for au, f in main.items():
        shift = np.abs(f(_geo(identity, au, 2)) - f(_geo(identity, au, 0))).max() * 32
        assert shift >= 0.9, f"AU{au} moves only {shift:.2f} px at intensity 2"


def test_aus_combine():
    identity = _identities()[1]
    a = np.zeros(len(ALL_AUS))
    a[AU_INDEX[25]] = 3
    open25 = face_geometry(identity, a).mouth_gap
    a[AU_INDEX[26]] = 3
    both = face_geometry(identity, a)
    assert both.mouth_gap > open25 > 0
    a[:] = 0
    a[AU_INDEX[6]] = a[AU_INDEX[12]] = 4
    g = face_geometry(identity, a)
    g0 = face_geometry(identity, np.zeros(len(ALL_AUS)))
    assert (g.mouth_corners[:, 1] < g0.mouth_corners[:, 1]).all()
    assert (g.cheeks[:, 1] < g0.cheeks[:, 1]).all()


@pytest.mark.parametrize(("side", "moved"), [("left", 1), ("right", 0)])
def test_unilateral_au12_and_au14_act_on_one_side(side, moved):
    # "left" is the subject's left = the image-right half (index 1)
    identity = _identities()[0]
    g0 = _geo(identity, 12, 0)
    g = _geo(identity, 12, 4, unilateral=side)
    dy = g.mouth_corners[:, 1] - g0.mouth_corners[:, 1]
    assert dy[moved] < -0.05
    assert dy[1 - moved] == pytest.approx(0.0, abs=1e-12)
    g = _geo(identity, 14, 4, unilateral=side)
    dx = np.abs(g.mouth_corners[:, 0]) - np.abs(g0.mouth_corners[:, 0])
    assert dx[moved] < -0.03
    assert dx[1 - moved] == pytest.approx(0.0, abs=1e-12)
    assert g.dimple_strength[moved] > 0 and g.dimple_strength[1 - moved] == 0


def test_identities_are_reproducible_and_wild_is_wider():
    a = sample_identity(np.random.default_rng(7), "lab")
    assert a == sample_identity(np.random.default_rng(7), "lab")
    rng = np.random.default_rng(8)
    lab = [sample_identity(rng, "lab").face_width for _ in range(300)]
    wild = [sample_identity(rng, "wild").face_width for _ in range(300)]
    assert np.ptp(wild) > np.ptp(lab)


def test_bad_inputs_raise_user_error():
    identity = _identities()[0]
    with pytest.raises(UserError, match="shape"):
        face_geometry(identity, np.zeros(12))
    with pytest.raises(UserError, match="left"):
        face_geometry(identity, np.zeros(len(ALL_AUS)), unilateral="up")
    with pytest.raises(UserError, match="lab, wild"):
        sample_identity(np.random.default_rng(0), "studio")
