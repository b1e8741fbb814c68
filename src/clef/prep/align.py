"""Similarity alignment of 5 facial landmarks to a template, and the warp that cuts the crop.

The recipe (docs/datasets.md, "Preprocessing"): detect the face and its 5 landmarks, fit the similarity
transform (rotation, uniform scale, translation; no reflection, no shear) that maps them onto a
fixed 5-point template by least squares (Umeyama, 1991), and resample the image through it into a
square crop. The template is the widely used 5-point face template of ArcFace (defined on a
112 x 112 crop), shrunk toward the centre by a margin so that brows, forehead and chin stay in view.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

# (x, y) on a 112 x 112 crop: left eye, right eye, nose tip, left and right mouth corner (as seen in
# the image). Source: the ArcFace / InsightFace alignment template.
ARCFACE_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
TEMPLATES = {"arcface": ARCFACE_112}


@dataclass(frozen=True)
class AlignRecipe:
    """How a face crop is made; saved with every preprocessing run.

    ``size``: side of the square output crop in pixels. ``margin``: extra context on each side, as
    a fraction of the template square (0 gives the tight ArcFace crop; 0.25 makes the crop 1.5x as
    wide, keeping brows and chin). ``template``: name in :data:`TEMPLATES`.
    """

    size: int = 224
    margin: float = 0.25
    template: str = "arcface"

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; valid: {', '.join(sorted(TEMPLATES))}")
        if self.size < 16:
            raise ValueError(f"crop size must be at least 16, got {self.size}")
        if not 0.0 <= self.margin <= 2.0:
            raise ValueError(f"margin must be in [0, 2], got {self.margin}")

    def points(self) -> torch.Tensor:
        """The template landmarks in output-crop pixels, ``(5, 2)`` float64."""
        unit = torch.tensor(TEMPLATES[self.template], dtype=torch.float64) / 112.0
        # Shrink toward the centre so the template square covers 1 / (1 + 2 margin) of the crop.
        unit = (unit - 0.5) / (1.0 + 2.0 * self.margin) + 0.5
        # Pixel centres sit at integer coordinates, so the crop spans [-0.5, size - 0.5].
        return unit * self.size - 0.5

    def to_dict(self) -> dict:
        """The recipe plus the template points it resolves to (for the run folder)."""
        return {**asdict(self), "points": [[round(v, 4) for v in p] for p in self.points().tolist()]}


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity ``T`` with ``dst ~ T @ [src, 1]`` (Umeyama's method).

    ``src``: ``(B, N, 2)`` or ``(N, 2)`` points; ``dst``: ``(N, 2)`` or matching ``(B, N, 2)``.
    Returns ``(B, 2, 3)`` (or ``(2, 3)``) float64 matrices ``[s R | t]`` with ``det R = +1``.
    """
    single = src.dim() == 2
    src = src.double().reshape(-1, src.shape[-2], 2)
    dst = dst.double().to(src.device).expand_as(src)
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.transpose(1, 2) @ xs / src.shape[1]  # (B, 2, 2)
    u, sing, vt = torch.linalg.svd(cov)
    # Flip the weakest axis if the best orthogonal map would be a reflection.
    d = torch.sign(torch.linalg.det(u) * torch.linalg.det(vt))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.stack([torch.ones_like(d), d], dim=1)
    rot = u @ torch.diag_embed(diag) @ vt
    var_s = (xs**2).sum(dim=(1, 2)) / src.shape[1]
    scale = (sing * diag).sum(1) / var_s.clamp(min=1e-12)
    lin = scale[:, None, None] * rot
    t = mu_d.transpose(1, 2) - lin @ mu_s.transpose(1, 2)
    out = torch.cat([lin, t], dim=2)
    return out[0] if single else out


def apply_transform(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map ``(..., N, 2)`` points through ``(..., 2, 3)`` affine matrices."""
    matrix = matrix.to(points.dtype)
    return points @ matrix[..., :2].transpose(-1, -2) + matrix[..., None, :, 2]


def warp_crop(image: torch.Tensor, matrix: torch.Tensor, size: int) -> torch.Tensor:
    """Resample ``image`` ``(3, H, W)`` (0..255) through ``matrix`` (source -> crop pixels) into a
    ``(3, size, size)`` float crop. Outside the image is black.

    Bilinear sampling aliases when the face shrinks by more than 2x, so the image is first
    average-pooled by an integer factor that brings the shrink back near 1.
    """
    image = image.float()
    # The 3x3 algebra runs in float64 on the CPU (some devices lack float64); only the sampling
    # grid goes to the image's device.
    full = torch.cat([matrix.detach().double().cpu(), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    scale = math.sqrt(abs(torch.linalg.det(full[:2, :2]).item()))  # crop px per source px
    k = int(math.floor(1.0 / scale)) if scale > 0 else 1
    if k >= 2:
        image = F.avg_pool2d(image[None], k, k, ceil_mode=True)[0]
        # Pooled pixel j covers source pixels [jk, jk + k): its centre is source x = k j + (k - 1) / 2.
        c = (k - 1) / 2
        full = full @ torch.tensor([[k, 0.0, c], [0.0, k, c], [0.0, 0.0, 1.0]], dtype=torch.float64)
    _, h, w = image.shape
    # affine_grid maps normalised crop coordinates to normalised source coordinates; with
    # align_corners=False, -1 / +1 are the outer edges of the border pixels (pixel centres at integers).
    crop_from_norm = torch.tensor(
        [[size / 2, 0.0, size / 2 - 0.5], [0.0, size / 2, size / 2 - 0.5], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    norm_from_source = torch.tensor(
        [[2 / w, 0.0, 1 / w - 1], [0.0, 2 / h, 1 / h - 1], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    theta = (norm_from_source @ torch.linalg.inv(full) @ crop_from_norm)[:2]
    grid = F.affine_grid(theta[None].float().to(image.device), [1, 3, size, size], align_corners=False)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0]


def align_faces(
    image: torch.Tensor, landmarks: torch.Tensor, recipe: AlignRecipe
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned crops of the faces of one image.

    ``image``: ``(3, H, W)`` 0..255; ``landmarks``: ``(K, 5, 2)`` pixels. Returns crops
    ``(K, 3, size, size)`` uint8 and the ``(K, 2, 3)`` transforms (source -> crop pixels).
    """
    if landmarks.shape[0] == 0:
        return image.new_zeros(0, 3, recipe.size, recipe.size, dtype=torch.uint8), landmarks.new_zeros(
            0, 2, 3
        )
    matrices = similarity_transform(landmarks.cpu(), recipe.points())
    crops = [warp_crop(image, m, recipe.size) for m in matrices]
    crops = torch.stack(crops).round().clamp(0, 255).to(torch.uint8)
    return crops, matrices
