import math

import pytest
import torch

from clef.prep.align import AlignRecipe, apply_transform, similarity_transform, warp_crop


def similarity(angle, scale, tx, ty):
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[c, -s, tx], [s, c, ty]], dtype=torch.float64)


@pytest.mark.parametrize(
    "angle,scale,tx,ty", [(0.0, 1.0, 0.0, 0.0), (0.4, 2.5, 10.0, -3.0), (-2.8, 0.3, -50.0, 7.5)]
)
def test_similarity_transform_recovers_a_known_transform(angle, scale, tx, ty):
    g = torch.Generator().manual_seed(0)
    src = torch.rand(5, 2, generator=g, dtype=torch.float64) * 200
    truth = similarity(angle, scale, tx, ty)
    fitted = similarity_transform(src, apply_transform(truth, src))
    assert torch.allclose(fitted, truth, atol=1e-9)


def test_similarity_transform_is_batched_and_never_reflects():
    g = torch.Generator().manual_seed(1)
    src = torch.rand(3, 5, 2, generator=g, dtype=torch.float64)
    mirrored = src * torch.tensor([-1.0, 1.0], dtype=torch.float64)
    fitted = similarity_transform(src, mirrored[0])
    assert fitted.shape == (3, 2, 3)
    assert (torch.linalg.det(fitted[:, :, :2]) > 0).all()


def test_least_squares_fit_beats_perturbed_transforms():
    g = torch.Generator().manual_seed(2)
    src = torch.rand(5, 2, generator=g, dtype=torch.float64) * 100
    dst = apply_transform(similarity(0.3, 1.5, 4.0, 2.0), src) + torch.randn(
        5, 2, generator=g, dtype=torch.float64
    )
    best = similarity_transform(src, dst)
    err = ((apply_transform(best, src) - dst) ** 2).sum()
    for _ in range(20):
        other = best + 1e-3 * torch.randn(2, 3, generator=g, dtype=torch.float64) * torch.tensor(
            [[1, 1, 100]] * 2
        )
        # keep it a similarity: [[a, -b], [b, a]]
        a, b = other[0, 0], other[1, 0]
        other[0, 1], other[1, 1] = -b, a
        assert ((apply_transform(other, src) - dst) ** 2).sum() >= err


@pytest.mark.parametrize("scale", [1.0, 0.6, 0.21])
def test_warp_crop_puts_a_source_point_where_the_matrix_says(scale):
    # A bright 9 x 9 square centred at (x, y) = (150, 90) must land, in the crop, at matrix @ (150, 90),
    # also when the image is pre-pooled to avoid aliasing (scale < 0.5).
    image = torch.zeros(3, 240, 320)
    image[:, 86:95, 146:155] = 255.0
    matrix = similarity(0.2, scale, 0.0, 0.0)
    matrix[:, 2] = torch.tensor([70.0, 85.0], dtype=torch.float64) - matrix[:, :2] @ torch.tensor(
        [150.0, 90.0], dtype=torch.float64
    )
    crop = warp_crop(image, matrix, 160)
    weights = crop[0]
    ys, xs = torch.meshgrid(torch.arange(160.0), torch.arange(160.0), indexing="ij")
    centre = torch.stack([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
    expected = apply_transform(matrix, torch.tensor([[150.0, 90.0]], dtype=torch.float64))[0]
    assert torch.allclose(centre.double(), expected, atol=0.05)


def test_recipe_points_and_margin():
    tight, loose = AlignRecipe(size=112, margin=0.0), AlignRecipe(size=224, margin=0.25)
    # margin 0 at 112 px is the original template (up to the pixel-centre convention)
    assert torch.allclose(
        tight.points()[0], torch.tensor([38.2946 - 0.5, 51.6963 - 0.5], dtype=torch.float64)
    )
    eye_gap = lambda r: (r.points()[1, 0] - r.points()[0, 0]).item()  # noqa: E731
    assert eye_gap(loose) == pytest.approx(eye_gap(tight) * 2 / 1.5)
    assert loose.to_dict()["margin"] == 0.25 and len(loose.to_dict()["points"]) == 5
    with pytest.raises(ValueError, match="valid: arcface"):
        AlignRecipe(template="nope")
