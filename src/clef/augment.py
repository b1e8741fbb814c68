"""Two-view image augmentation on batched tensors, on the training device (docs/method.md §3: I and I′).

The data loader only decodes (uint8 images); augmentation runs here, on the whole batch at once, on
whatever device the batch is on. Each operation is one vectorised tensor op over the batch with
per-sample random parameters (crop box, flip, jitter factors, blur sigma), so a GPU does the work of
a pool of CPU workers in a few kernels, and the same code runs on CPU.

Randomness: every parameter is drawn from one CPU ``torch.Generator`` passed by the caller (a few
numbers per sample), then moved to the batch's device. The same generator state therefore gives the
same views on every device, and the engine saves and restores the generator for exact resumption.

Operations, in this order (SimCLR's recipe, milder crops since faces are already aligned crops):

1. random resized crop + resize to ``size`` and horizontal flip: one ``affine_grid``/``grid_sample``;
2. colour jitter with probability ``jitter_p``: brightness, contrast, saturation, hue (fixed order;
   hue is a rotation of the chroma plane in YIQ space, a close, cheap stand-in for an HSV hue shift;
   saturation and hue are one per-sample 3×3 colour matrix);
3. grayscale with probability ``grayscale_p``;
4. gaussian blur with probability ``blur_p``, sigma uniform in ``blur_sigma`` (separable, grouped conv).

Output: float32 in [0, 1]; normalisation to the model's mean/std is the model's preprocessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "BatchAugment", "two_views", "to_float"]

# ITU-R BT.601 luma, as used for grayscale by PIL and torchvision.
_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of :class:`BatchAugment` (defaults: SimCLR's, with crops of at least 35 % area)."""

    size: int | None = None  # output side in pixels; None keeps the input's size
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) in [0, 255] -> float32 in [0, 1]; float input is returned as float32."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)  # (B, 1, H, W)


class BatchAugment:
    """Callable ``(images (B, 3, H, W) uint8|float, generator) -> (B, 3, size, size) float32 in [0, 1]``.

    With ``size=None`` the output keeps the input's H × W.
    """

    def __init__(self, cfg: AugmentConfig = AugmentConfig()) -> None:
        self.cfg = cfg

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W); got {tuple(images.shape)}")
        x = to_float(images)
        x = self._crop_flip(x, generator)
        x = self._jitter(x, generator)
        x = self._grayscale(x, generator)
        x = self._blur(x, generator)
        return x

    def _crop_flip(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        c = self.cfg
        b, _, h, w = x.shape
        area = _uniform(b, *c.crop_scale, g)  # fraction of the image area
        log_ratio = _uniform(b, math.log(c.crop_ratio[0]), math.log(c.crop_ratio[1]), g)
        ratio = torch.exp(log_ratio)  # width / height of the crop
        # Crop size as a fraction of the image side; clamped rather than re-drawn (torchvision retries).
        cw = torch.sqrt(area * ratio * h / w).clamp(max=1.0)
        ch = torch.sqrt(area / ratio * w / h).clamp(max=1.0)
        # Crop centre in normalised [-1, 1] coordinates, uniform over the positions that stay inside.
        cx = (1 - cw) * (2 * torch.rand(b, generator=g) - 1)
        cy = (1 - ch) * (2 * torch.rand(b, generator=g) - 1)
        flip = torch.where(torch.rand(b, generator=g) < c.flip_p, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = cw * flip  # a negative x scale mirrors the crop
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = ch
        theta[:, 1, 2] = cy
        out_h, out_w = (h, w) if c.size is None else (c.size, c.size)
        grid = F.affine_grid(theta.to(x.device, x.dtype), [b, 3, out_h, out_w], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _jitter(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        c = self.cfg
        b = x.shape[0]
        on = torch.rand(b, generator=g) < c.jitter_p
        # Factors of 1 (and a hue angle of 0) leave a sample unchanged, so no per-sample branching.
        one = torch.ones(b)
        bright = torch.where(on, _uniform(b, 1 - c.brightness, 1 + c.brightness, g), one)
        contrast = torch.where(on, _uniform(b, 1 - c.contrast, 1 + c.contrast, g), one)
        sat = torch.where(on, _uniform(b, 1 - c.saturation, 1 + c.saturation, g), one)
        hue = torch.where(on, _uniform(b, -c.hue, c.hue, g), torch.zeros(b))
        bright, contrast = (t.to(x.device, x.dtype).view(b, 1, 1, 1) for t in (bright, contrast))

        x = (x * bright).clamp(0, 1)
        mean = _gray(x).mean(dim=(2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean).clamp(0, 1)
        # Saturation and hue are linear in RGB: one per-sample 3x3 matrix M = H · S, built on the CPU
        # in float64 (B small matrices), applied to the batch with one bmm. S blends each pixel with its
        # luma: S = s·I + (1 - s)·1·lumaᵀ. H rotates the chroma plane (I, Q) of YIQ by 2π·hue:
        # H = YIQ⁻¹ · R · YIQ. (torchvision clamps between the two; here one clamp follows both.)
        luma = torch.tensor(_LUMA, dtype=torch.float64)
        s3 = sat.double().view(b, 1, 1)
        sat_m = s3 * torch.eye(3, dtype=torch.float64) + (1 - s3) * torch.outer(
            torch.ones(3, dtype=torch.float64), luma
        )
        yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
        angle = 2 * math.pi * hue.double()
        rot = torch.zeros(b, 3, 3, dtype=torch.float64)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
        rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
        m = torch.linalg.inv(yiq) @ rot @ yiq @ sat_m  # (B, 3, 3)
        x = torch.bmm(m.to(x.device, x.dtype), x.reshape(b, 3, -1)).view_as(x)
        return x.clamp(0, 1)

    def _grayscale(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        on = (torch.rand(x.shape[0], generator=g) < self.cfg.grayscale_p).to(x.device).view(-1, 1, 1, 1)
        return torch.where(on, _gray(x).expand_as(x), x)

    def _blur(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        c = self.cfg
        b, ch, h, w = x.shape
        on = torch.rand(b, generator=g) < c.blur_p
        sigma = _uniform(b, *c.blur_sigma, g)
        if c.blur_p <= 0 or c.blur_sigma[1] <= 0:
            return x
        radius = max(1, min(math.ceil(3 * c.blur_sigma[1]), (min(h, w) - 1) // 2))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        delta = (offsets == 0).float().expand(b, -1)
        kernel = torch.where(on[:, None], kernel, delta)  # unblurred samples get the identity kernel
        # One group per (sample, channel): (1, B*C, H, W) convolved with B*C separable kernels.
        k = kernel.to(x.device, x.dtype).repeat_interleave(ch, dim=0)  # (B*C, 2r+1)
        y = F.pad(x.reshape(1, b * ch, h, w), (radius, radius, radius, radius), mode="reflect")
        y = F.conv2d(y, k.view(b * ch, 1, 1, -1), groups=b * ch)
        y = F.conv2d(y, k.view(b * ch, 1, -1, 1), groups=b * ch)
        return y.view(b, ch, h, w)


def two_views(
    images: torch.Tensor, augment: BatchAugment, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent augmentations (I, I′) of the same batch: each (B, 3, size, size) float32."""
    return augment(images, generator), augment(images, generator)
