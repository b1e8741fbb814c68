from __future__ import annotations

import dataclasses

import torch

from clef.augment import AugmentConfig, BatchAugment, to_float, two_views

IDENTITY = AugmentConfig(
    size=16,
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_p=0.0,
    jitter_p=0.0,
    grayscale_p=0.0,
    blur_p=0.0,
)


def _images(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8)


def test_identity_config_returns_the_input():
    x = _images()
    out = BatchAugment(IDENTITY)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, to_float(x), atol=1e-5, rtol=0)


def test_flip_mirrors_and_output_shape_range():
    x = _images()
    out = BatchAugment(dataclasses.replace(IDENTITY, flip_p=1.0))(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, to_float(x).flip(-1), atol=1e-5, rtol=0)
    full = BatchAugment(AugmentConfig(size=12))(x, torch.Generator().manual_seed(0))
    assert full.shape == (4, 3, 12, 12) and full.dtype == torch.float32
    assert full.min() >= 0 and full.max() <= 1


def test_crop_zooms_in_on_a_region():
    # Left half black, right half white: crops of half the width see a mostly uniform region sometimes,
    # and never the whole image unless the crop is the full image.
    x = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    x[..., 16:] = 255
    cfg = dataclasses.replace(IDENTITY, size=32, crop_scale=(0.1, 0.1))
    out = BatchAugment(cfg)(x, torch.Generator().manual_seed(1))
    whole = to_float(x).mean()
    assert not torch.allclose(out.mean(dim=(1, 2, 3)), whole.expand(8), atol=0.05)


def test_per_sample_parameters_differ_within_a_batch():
    x = _images(b=1).expand(6, -1, -1, -1).contiguous()
    out = BatchAugment(AugmentConfig(size=16))(x, torch.Generator().manual_seed(2))
    flat = out.flatten(1)
    assert all(not torch.allclose(flat[0], flat[i]) for i in range(1, 6))


def test_deterministic_given_generator_and_views_differ():
    x = _images()
    aug = BatchAugment(AugmentConfig(size=16))
    a1, a2 = two_views(x, aug, torch.Generator().manual_seed(5))
    b1, b2 = two_views(x, aug, torch.Generator().manual_seed(5))
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, a2)


def test_grayscale_and_blur_and_jitter():
    x = _images(size=24)
    gray = BatchAugment(dataclasses.replace(IDENTITY, size=24, grayscale_p=1.0))(x, torch.Generator())
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    blur = BatchAugment(dataclasses.replace(IDENTITY, size=24, blur_p=1.0, blur_sigma=(1.5, 2.0)))(
        x, torch.Generator()
    )
    # Blurring noise lowers its pixel-to-pixel variation.
    assert blur.diff(dim=-1).abs().mean() < 0.5 * to_float(x).diff(dim=-1).abs().mean()
    assert torch.allclose(blur.mean(), to_float(x).mean(), atol=0.02)  # and keeps the mean
    const = torch.full((16, 3, 8, 8), 128, dtype=torch.uint8)
    jit = dataclasses.replace(IDENTITY, size=8, jitter_p=1.0, contrast=0.0, saturation=0.0, hue=0.0)
    out = BatchAugment(jit)(const, torch.Generator().manual_seed(0))
    ratios = out[:, 0, 0, 0] / (128 / 255)
    assert ratios.min() >= 0.6 - 1e-4 and ratios.max() <= 1.4 + 1e-4 and ratios.std() > 0.05


def test_hue_rotation_keeps_gray_pixels_gray():
    const = torch.full((4, 3, 8, 8), 100, dtype=torch.uint8)
    cfg = dataclasses.replace(
        IDENTITY, size=8, jitter_p=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.5
    )
    out = BatchAugment(cfg)(const, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, to_float(const), atol=1e-5, rtol=0)


def test_size_none_keeps_the_input_size():
    out = BatchAugment(AugmentConfig())(_images(b=2, size=20), torch.Generator())
    assert out.shape == (2, 3, 20, 20)
