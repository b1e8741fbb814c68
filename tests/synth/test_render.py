"""Renderer: AUs are visible where they act, identities are stable and dominate pixel variance."""

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from clef.errors import UserError
from clef.labels import ALL_AUS
from clef.synth.face import AU_INDEX, face_geometry
from clef.synth.identity import sample_identity
from clef.synth.render import (
    BACKGROUNDS,
    OCCLUSIONS,
    Nuisance,
    encode_jpeg,
    landmarks_to_pixels,
    render_face,
    sample_nuisance,
)

UPPER_AUS = (1, 2, 4, 5, 6, 7)
LOWER_AUS = (10, 12, 14, 15, 17, 20, 23, 24, 25, 26)


def _au(**kw):
    a = np.zeros(len(ALL_AUS))
    for k, v in kw.items():
        a[AU_INDEX[int(k[2:])]] = v
    return a


@pytest.fixture(scope="module")
def identities():
    rng = np.random.default_rng(11)
    return [sample_identity(rng, "lab") for _ in range(4)]


@pytest.mark.parametrize("size", [16, 64, 100, 112, 224])
def test_sizes(identities, size):
    img = render_face(identities[0], _au(au12=3), sample_nuisance(np.random.default_rng(0)), size)
    assert img.shape == (size, size, 3)
    assert img.dtype == np.uint8
    # the face sits in the middle of the crop: the centre differs from the corners
    assert np.abs(img[size // 2, size // 2].astype(int) - img[1, 1]).sum() > 30


def test_encode_jpeg_round_trips(identities):
    img = render_face(identities[0], _au(au25=3), Nuisance(), 64)
    data = encode_jpeg(img, 90)
    assert data[:2] == b"\xff\xd8"  # JPEG start-of-image marker
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert back.shape == img.shape
    assert np.abs(back.astype(int) - img).mean() < 6
    assert len(encode_jpeg(img, 30)) < len(data)


@pytest.mark.parametrize("size", [8, 15, 0, -64])
def test_small_size_is_a_user_error(identities, size):
    with pytest.raises(UserError, match="size"):
        render_face(identities[0], _au(), Nuisance(), size)


def _changed(identity, au, size=64, unilateral=None):
    a0 = render_face(identity, _au(), Nuisance(), size).astype(int)
    a2 = render_face(identity, _au(**{f"au{au}": 2}), Nuisance(), size, unilateral=unilateral).astype(int)
    return np.abs(a2 - a0).sum(axis=2)


@pytest.mark.parametrize("au", ALL_AUS)
def test_intensity_two_is_visible_in_the_right_region_at_64(identities, au):
    for identity in identities:
        g = face_geometry(identity, _au())
        diff = _changed(identity, au)
        # row that separates the upper face (brows, lids, cheeks) from the mouth region
        nose_row = landmarks_to_pixels(g.nose_tip, Nuisance(), 64)[1]
        eye_row = landmarks_to_pixels(g.eye_upper[0, 3], Nuisance(), 64)[1]
        strong = (diff > 20).sum()
        assert strong >= 4, f"AU{au} changes only {strong} pixels visibly"
        rows = np.arange(64)[:, None]
        if au == 6:  # the raised cheek also deepens the nasolabial fold
            region = rows < nose_row + 4
        elif au in UPPER_AUS:
            region = rows < nose_row - 2
        elif au in LOWER_AUS:
            region = rows > eye_row + 6
        else:  # AU9: nose and upper lip
            region = (rows > eye_row - 4) & (rows < 60)
        share = diff[np.broadcast_to(region, diff.shape)].sum() / diff.sum()
        assert share > 0.9, f"AU{au}: only {share:.2f} of the change lies in its region"


@pytest.mark.parametrize(("side", "half"), [("left", 1), ("right", 0)])
def test_unilateral_au12_changes_one_side_only(identities, side, half):
    for identity in identities:
        diff = _changed(identity, 12, unilateral=side)
        sides = [diff[:, :31].sum(), diff[:, 33:].sum()]
        assert sides[half] > 0
        assert sides[1 - half] < 0.1 * sides[half]


def test_deterministic_given_rng_state(identities):
    nz = sample_nuisance(np.random.default_rng(5), "wild")
    imgs = [
        render_face(identities[1], _au(au6=3, au12=3), nz, 64, rng=np.random.default_rng(9)) for _ in range(2)
    ]
    assert np.array_equal(imgs[0], imgs[1])
    assert encode_jpeg(imgs[0], 90) == encode_jpeg(imgs[1], 90)
    other = render_face(identities[1], _au(au6=3, au12=3), nz, 64, rng=np.random.default_rng(10))
    assert not np.array_equal(imgs[0], other)  # noise really comes from rng


def test_identities_differ_a_lot(identities):
    imgs = [render_face(i, _au(), Nuisance(), 64).astype(float) for i in identities]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert np.abs(imgs[i] - imgs[j]).mean() > 15


def test_identity_explains_more_pixel_variance_than_aus():
    rng = np.random.default_rng(1)
    ids = [sample_identity(rng, "lab") for _ in range(20)]
    aus = rng.uniform(0, 4, (20, len(ALL_AUS)))
    nz = Nuisance()
    x = np.array([[render_face(i, a, nz, 64) for a in aus] for i in ids], dtype=np.float64)
    between_identity = x.mean(axis=1).var(axis=0).sum()
    between_au = x.mean(axis=0).var(axis=0).sum()
    assert between_identity > 5 * between_au


def test_wild_backgrounds_and_occlusions_render(identities):
    base = sample_nuisance(np.random.default_rng(2), "wild")
    base = dataclasses.replace(base, occlusion=None, background="plain")
    plain = render_face(identities[2], _au(), base, 64)
    for bg in BACKGROUNDS:
        img = render_face(identities[2], _au(), dataclasses.replace(base, background=bg), 64)
        assert img.shape == (64, 64, 3)
    for occ in OCCLUSIONS:
        nz = dataclasses.replace(base, occlusion=occ, occlusion_x=0.0, occlusion_y=0.3, occlusion_size=0.5)
        img = render_face(identities[2], _au(), nz, 64)
        assert np.abs(img.astype(int) - plain).sum(axis=2).astype(bool).mean() > 0.03, occ


def test_sampled_nuisances_are_larger_in_the_wild():
    rng = np.random.default_rng(4)
    lab = [sample_nuisance(rng, "lab") for _ in range(200)]
    wild = [sample_nuisance(rng, "wild") for _ in range(200)]
    assert np.std([n.rotation for n in wild]) > 2 * np.std([n.rotation for n in lab])
    assert all(n.occlusion is None and n.background == "subject" for n in lab)
    assert any(n.occlusion is not None for n in wild)
    with pytest.raises(UserError, match="lab, wild"):
        sample_nuisance(rng, "studio")
