"""Test-side references for the face ResNet, written from dlib's published network definition
(``examples/dnn_face_recognition_ex.cpp``) and face-api's weight manifest, sharing no code with
``clef.model.face_resnet``:

- :func:`numpy_forward`: the whole network in float64 NumPy (sliding-window convolutions), from the
  raw arrays of the weight file;
- :func:`read_face_api`: the uint8-quantised copy in the npm package ``@vladmandic/face-api``,
  renamed to the keys of :func:`clef.model.dlib_format.read_face_resnet`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# dlib's anet_type, input side first: (stage, width, first block halves the resolution, blocks)
ARCHITECTURE = (
    ("conv32", 32, False, 3),
    ("conv64", 64, True, 4),
    ("conv128", 128, True, 3),
    ("conv256", 256, True, 3),
    ("conv256_out", 256, True, 1),
)


def _conv(x: np.ndarray, a: dict, name: str, stride: int) -> np.ndarray:
    """dlib con_ + affine_: cross-correlation, padding k/2 at stride 1 and 0 otherwise, bias,
    then per-channel ``* scale + shift``. x: (N, C, H, W) float64."""
    w = a[f"{name}.filters"].astype(np.float64)
    k = w.shape[2]
    pad = k // 2 if stride == 1 else 0
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # N C Ho Wo k k
    y = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)  # N O Ho Wo
    y = y + a[f"{name}.bias"][None, :, None, None]
    return y * a[f"{name}.scale"][None, :, None, None] + a[f"{name}.shift"][None, :, None, None]


def _pool(x: np.ndarray, k: int, stride: int, reduce) -> np.ndarray:
    return reduce(sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride], axis=(4, 5))


def _add_prev(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's add_prev_: output of the larger size in every dimension; what lies outside an operand
    counts as 0."""
    out = np.zeros([max(s, t) for s, t in zip(a.shape, b.shape, strict=True)])
    out[tuple(slice(0, s) for s in a.shape)] += a
    out[tuple(slice(0, s) for s in b.shape)] += b
    return out


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def numpy_forward(arrays: dict, images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """images (N, 3, S, S), already scaled as dlib's input layer does -> ({stage: pooled (N, C)},
    descriptor (N, 128)), in float64."""
    x = _relu(_conv(images.astype(np.float64), arrays, "stem", 2))
    x = _pool(x, 3, 2, np.max)
    pooled = {}
    for stage, _, down, blocks in ARCHITECTURE:
        for i in range(blocks):
            halve = down and i == 0
            name = f"{stage}.{i}"
            y = _conv(_relu(_conv(x, arrays, f"{name}.conv1", 2 if halve else 1)), arrays, f"{name}.conv2", 1)
            x = _relu(_add_prev(y, _pool(x, 2, 2, np.mean) if halve else x))
        pooled[stage] = x.mean(axis=(2, 3))
    return pooled, pooled["conv256_out"] @ arrays["fc.weights"].astype(np.float64)


# --- the npm copy ------------------------------------------------------------------------------

FACE_API_FILES = ("face_recognition_model.bin", "face_recognition_model-weights_manifest.json")


def _our_name(face_api_name: str) -> str:
    """face-api's ``conv64_1/conv2/conv/filters`` -> ``conv64.1.conv2.filters`` etc."""
    if face_api_name == "fc":
        return "fc.weights"
    block, *rest = face_api_name.split("/")
    if block == "conv32_down":  # face-api's name for the stem
        base = "stem"
    elif block == "conv256_down_out":
        base = "conv256_out.0"
    else:
        width, index = re.fullmatch(r"conv(\d+)_(down|\d)", block).groups()
        # stages that halve the resolution start with their down block (index 0); conv32 has none
        number = 0 if index == "down" else int(index) - (width == "32")
        base = f"conv{width}.{number}"
    if rest[0] in ("conv1", "conv2"):
        base, rest = f"{base}.{rest[0]}", rest[1:]
    role = {"conv/filters": "filters", "conv/bias": "bias", "scale/weights": "scale", "scale/biases": "shift"}
    return f"{base}.{role['/'.join(rest)]}"


def read_face_api(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, tuple[float, float] | None]]:
    """-> (arrays in dlib's layouts under our names, the (scale, min) of each uint8 entry, None for
    a float32 entry).

    Manifest entries in file order; a ``quantization {dtype: uint8, scale, min}`` entry takes n
    bytes (value = byte * scale + min), any other n float32; filters are HWIO.
    """
    manifest = json.loads((folder / FACE_API_FILES[1]).read_text())
    data = (folder / FACE_API_FILES[0]).read_bytes()
    arrays, quantisation, pos = {}, {}, 0
    for entry in manifest[0]["weights"]:
        n = int(np.prod(entry["shape"]))
        quant = entry.get("quantization")
        if quant:
            assert quant["dtype"] == "uint8"
            values = np.frombuffer(data, np.uint8, n, pos) * quant["scale"] + quant["min"]
            pos += n
        else:
            values = np.frombuffer(data, "<f4", n, pos)
            pos += 4 * n
        value = values.astype(np.float32).reshape(entry["shape"])
        name = _our_name(entry["name"])
        arrays[name] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
        quantisation[name] = (quant["scale"], quant["min"]) if quant else None
    assert pos == len(data), "the manifest does not account for every byte"
    return arrays, quantisation


def quantise_like(arrays: dict[str, np.ndarray], quantisation: dict) -> dict[str, np.ndarray]:
    """``arrays`` rounded to the nearest point of each uint8 grid (byte * scale + min), float32
    entries kept: what face-api's file holds if it is dlib's weights quantised."""
    out = {}
    for name, value in arrays.items():
        if quantisation[name] is None:
            out[name] = value
            continue
        scale, low = quantisation[name]
        byte = np.clip(np.round((value.astype(np.float64) - low) / scale), 0, 255)
        out[name] = (byte * scale + low).astype(np.float32)
    return out
