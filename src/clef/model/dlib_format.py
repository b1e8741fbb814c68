"""Reader of dlib's serialised face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

dlib has no wheel here, so this module reads dlib's own file format (learned from dlib's
``serialize.h``, ``float_details.h``, ``dnn/core.h``, ``dnn/layers.h``, ``dnn/input.h``,
``dnn/loss.h`` and ``cuda/tensor.h``) into NumPy arrays; no dlib code is involved.

The encoding:

- integers: a control byte (bit 0x80: negative, low 4 bits: the number n of bytes that follow),
  then n bytes of the magnitude, least significant first;
- floating point numbers (the layers' learning-rate multipliers, the loss margin): a signed 64-bit
  mantissa then a signed 16-bit exponent, both as integers above (value = mantissa * 2**exponent;
  exponents 32000/32001/32002 mean +inf/-inf/NaN). dlib's own comment says "exponent first", its
  code writes the mantissa first;
- strings: their length as an integer, then the bytes; booleans: the ASCII byte '1' or '0';
- tensors: version 2, then the four sizes (samples, k, rows, columns), then that many
  little-endian IEEE float32 (not the float encoding above); an "alias tensor" (a view into a
  layer's parameter tensor) stores version 1 and its four sizes only.

A network is nested types, output layer outermost (``loss<fc<avg_pool<...<con<input>>>>>``), and
each wrapper writes its own version number and *then* its sub-network before its layer details.
So a file holds the loss layer, then the version numbers of every layer from the output down to the
input, then the input layer, then each layer's details and state from the input up to the output.
The wrappers carry no type name (tags and skips write only their version), so the reader walks the
architecture it expects (:func:`face_resnet_layers`, the network of dlib's
``dnn_face_recognition_ex.cpp``) and checks every layer's type name and hyperparameters on the way.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clef.errors import UserError

# The stages of the network: (name, width, whether the stage starts with a block that halves the
# resolution, number of plain residual blocks after it). dlib's alevel4 .. alevel0, input side first.
FACE_RESNET_STAGES: tuple[tuple[str, int, bool, int], ...] = (
    ("conv32", 32, False, 3),
    ("conv64", 64, True, 3),
    ("conv128", 128, True, 2),
    ("conv256", 256, True, 2),
    ("conv256_out", 256, True, 0),
)
STEM_WIDTH = 32
DESCRIPTOR_DIM = 128
# The size dlib's input layer expects (``input_rgb_image_sized<150>``) and how it scales pixels:
# value = (pixel_0..255 - channel mean) / 256 (dnn/input.h divides by 256, not 255).
NATIVE_SIZE = 150
INPUT_DIVISOR = 256.0
# dlib's default channel means (R, G, B), 0..255; the file stores its own, which must equal these.
INPUT_MEAN = (122.782, 117.001, 104.298)

_TENSOR_VERSION = 2
_ALIAS_VERSION = 1
_CONV_MODE = 0  # dlib's layer_mode: affine layers after convolutions scale per channel
_FC_NO_BIAS = 1  # dlib's fc_bias_mode


@dataclass(frozen=True)
class DlibFaceResNet:
    """What the file holds.

    ``arrays`` maps names to float32 arrays, input side first: for each convolution ``NAME``
    (``stem``, ``conv64.0.conv1``, ...) ``NAME.filters`` (out, in, kh, kw), ``NAME.bias`` (out,),
    ``NAME.scale`` and ``NAME.shift`` (out,) of the per-channel affine layer after it; then
    ``fc.weights`` (256, 128), the descriptor layer as dlib applies it (``x @ weights``, no bias).
    Block ``i`` of a stage is ``STAGE.i``; in a stage that halves the resolution block 0 does.
    """

    arrays: dict[str, np.ndarray]
    input_mean: tuple[float, float, float]  # R, G, B in 0..255
    input_size: int
    loss_margin: float
    loss_distance_threshold: float
    path: Path = field(compare=False)


# --- the expected architecture -----------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """One wrapper of dlib's network type: an ``add_layer`` with layer details (``kind`` one of
    con, affine, relu, max_pool, avg_pool, add_prev, fc), or a ``tag`` / ``skip`` wrapper."""

    kind: str
    name: str = ""
    # con: (filters, in channels, rows, cols, stride y, stride x, padding y, padding x);
    # max_pool / avg_pool: (rows, cols, stride y, stride x, padding y, padding x);
    # affine: (channels,); fc: (inputs, outputs).
    shape: tuple[int, ...] = ()


def _conv(name: str, c_out: int, c_in: int, k: int, stride: int) -> list[_Layer]:
    # dlib's con_ pads by k/2 when the stride is 1 and not at all otherwise.
    pad = k // 2 if stride == 1 else 0
    return [
        _Layer("con", name, (c_out, c_in, k, k, stride, stride, pad, pad)),
        _Layer("affine", name, (c_out,)),
    ]


def _block(name: str, c_in: int, c_out: int, down: bool) -> list[_Layer]:
    # dlib: block = affine<con<3x3,1>>> over relu<affine<con<3x3,stride>>>; ares = relu<add_prev1<
    # block<tag1<x>>>>; ares_down = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<tag1<x>>>>>>>.
    body = [
        _Layer("tag"),
        *_conv(f"{name}.conv1", c_out, c_in, 3, 2 if down else 1),
        _Layer("relu"),
        *_conv(f"{name}.conv2", c_out, c_out, 3, 1),
    ]
    if down:
        body += [_Layer("tag"), _Layer("skip"), _Layer("avg_pool", shape=(2, 2, 2, 2, 0, 0))]
    return [*body, _Layer("add_prev"), _Layer("relu")]


def face_resnet_layers() -> list[_Layer]:
    """The network of dlib's ``dnn_face_recognition_ex.cpp`` (``anet_type``), input side first,
    without its input and loss layers."""
    layers = [
        *_conv("stem", STEM_WIDTH, 3, 7, 2),
        _Layer("relu"),
        _Layer("max_pool", shape=(3, 3, 2, 2, 0, 0)),
    ]
    c_in = STEM_WIDTH
    for stage, width, down, plain in FACE_RESNET_STAGES:
        names = [f"{stage}.{i}" for i in range(int(down) + plain)]
        for i, name in enumerate(names):
            layers += _block(name, c_in, width, down and i == 0)
            c_in = width
    # avg_pool_everything is avg_pool_<0,0,1,1>: a window of the whole map.
    layers += [_Layer("avg_pool", shape=(0, 0, 1, 1, 0, 0)), _Layer("fc", "fc", (c_in, DESCRIPTOR_DIM))]
    return layers


# --- decoding ----------------------------------------------------------------------------------


class _FormatError(Exception):
    pass


class _Stream:
    """Cursor over the file's bytes with dlib's decoders."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _FormatError(f"the file ends early (wanted {n} bytes at byte {self.pos})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        """A signed integer (dlib's pack_int; unsigned ones use the same bytes, never negative)."""
        at = self.pos
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise _FormatError(f"bad integer control byte 0x{control:02x} at byte {at}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def uint(self) -> int:
        at = self.pos
        value = self.int()
        if value < 0:
            raise _FormatError(f"negative size or count at byte {at}")
        return value

    def float(self) -> float:
        at = self.pos
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            # dlib's pre-2013 text encoding of floats; files of this network never use it.
            raise _FormatError(f"text-encoded float at byte {at} (not supported)")
        mantissa, exponent = self.int(), self.int()
        specials = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return specials[exponent] if exponent in specials else math.ldexp(float(mantissa), exponent)

    def bool(self) -> bool:
        at = self.pos
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise _FormatError(f"bad boolean {byte!r} at byte {at}")
        return byte == b"1"

    def string(self) -> str:
        n = self.uint()
        if n > 256:  # dlib's version strings are short; a huge length means we are lost
            raise _FormatError(f"implausible string length {n} at byte {self.pos}")
        return self._take(n).decode("latin-1")

    def expect_string(self, *valid: str) -> str:
        at = self.pos
        found = self.string()
        if found not in valid:
            raise _FormatError(f"expected {' or '.join(map(repr, valid))} at byte {at}, found {found!r}")
        return found

    def expect_int(self, valid: tuple[int, ...], what: str) -> int:
        at = self.pos
        found = self.int()
        if found not in valid:
            raise _FormatError(f"{what}: expected {' or '.join(map(str, valid))} at byte {at}, found {found}")
        return found

    def _sizes(self, version: int, what: str) -> tuple[int, int, int, int]:
        self.expect_int((version,), f"{what} version")
        return (self.uint(), self.uint(), self.uint(), self.uint())

    def tensor(self) -> np.ndarray:
        """A resizable_tensor -> float32 array of shape (samples, k, rows, columns)."""
        shape = self._sizes(_TENSOR_VERSION, "tensor")
        count = math.prod(shape)
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias_tensor: only the shape of a view into a parameter tensor."""
        return self._sizes(_ALIAS_VERSION, "alias tensor")


def _expect(found: object, wanted: object, what: str) -> None:
    if found != wanted:
        raise _FormatError(f"{what}: expected {wanted}, found {found}")


def _read_con(s: _Stream, layer: _Layer) -> dict[str, np.ndarray]:
    version = s.expect_string("con_4", "con_5", "con_6")
    params = s.tensor().reshape(-1)
    n_filters, rows, cols = s.uint(), s.uint(), s.uint()
    strides = (s.uint(), s.uint())
    padding = (s.uint(), s.uint())
    filters, biases = s.alias(), s.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers (training only)
        s.float()
    if version in ("con_5", "con_6") and not s.bool():
        raise _FormatError(f"{layer.name}: convolution without bias (this network has biases)")
    if version == "con_6" and s.bool():
        raise _FormatError(f"{layer.name}: convolution with a fused relu (not in this network)")
    c_out, c_in, kh, kw, sy, sx, py, px = layer.shape
    _expect(
        (n_filters, rows, cols, *strides, *padding), (c_out, kh, kw, sy, sx, py, px), f"{layer.name} shape"
    )
    _expect(filters, (c_out, c_in, kh, kw), f"{layer.name} filter shape")
    _expect(biases, (1, c_out, 1, 1), f"{layer.name} bias shape")
    n = c_out * c_in * kh * kw
    _expect(params.size, n + c_out, f"{layer.name} parameter count")
    return {f"{layer.name}.filters": params[:n].reshape(filters), f"{layer.name}.bias": params[n:]}


def _read_affine(s: _Stream, layer: _Layer) -> dict[str, np.ndarray]:
    version = s.expect_string("affine_", "affine_2")
    params = s.tensor().reshape(-1)
    gamma, beta = s.alias(), s.alias()
    s.expect_int((_CONV_MODE,), f"{layer.name} affine mode")
    if version == "affine_2" and s.bool():
        raise _FormatError(f"{layer.name}: disabled affine layer")
    (channels,) = layer.shape
    _expect((gamma, beta), ((1, channels, 1, 1),) * 2, f"{layer.name} affine shape")
    _expect(params.size, 2 * channels, f"{layer.name} affine parameter count")
    return {f"{layer.name}.scale": params[:channels], f"{layer.name}.shift": params[channels:]}


def _read_pool(s: _Stream, layer: _Layer) -> None:
    s.expect_string(f"{layer.kind}_2")
    found = tuple(s.uint() for _ in range(6))
    _expect(found, layer.shape, f"{layer.kind} window, stride, padding")


def _read_fc(s: _Stream, layer: _Layer) -> dict[str, np.ndarray]:
    version = s.expect_string("fc_2", "fc_3")
    n_out, n_in = s.uint(), s.uint()
    params = s.tensor().reshape(-1)
    weights, _biases = s.alias(), s.alias()
    s.expect_int((_FC_NO_BIAS,), "fc bias mode")
    for _ in range(4):
        s.float()
    if version == "fc_3":
        s.bool()  # use_bias; irrelevant when the bias mode is "no bias"
    _expect((n_in, n_out), layer.shape, "fc size")
    _expect(weights, (n_in, n_out, 1, 1), "fc weight shape")
    _expect(params.size, n_in * n_out, "fc parameter count")
    return {"fc.weights": params.reshape(n_in, n_out)}


def _read_details(s: _Stream, layer: _Layer) -> dict[str, np.ndarray]:
    if layer.kind == "con":
        return _read_con(s, layer)
    if layer.kind == "affine":
        return _read_affine(s, layer)
    if layer.kind == "fc":
        return _read_fc(s, layer)
    if layer.kind in ("max_pool", "avg_pool"):
        _read_pool(s, layer)
    elif layer.kind == "relu":
        if s.expect_string("relu_", "relu_2") == "relu_2" and s.bool():
            raise _FormatError("disabled relu layer")
    elif layer.kind == "add_prev":
        s.expect_string("add_prev_")
    else:  # pragma: no cover - face_resnet_layers() makes no other kind
        raise AssertionError(layer.kind)
    return {}


def _read_layer_state(s: _Stream, version: int, on_input: bool) -> None:
    """What an add_layer writes after its details: three flags and its cached tensors."""
    for _ in range(3):  # setup called, gradient stale, output disabled
        s.bool()
    s.tensor()  # x_grad
    s.tensor()  # cached output
    if on_input or version == 2:
        s.tensor()  # gradient of the final output (input layer) / of the parameters
    if on_input and version == 3:
        s.uint()  # sample expansion factor


def _read_network(s: _Stream) -> DlibFaceResNet:
    s.expect_int((1,), "add_loss_layer version")
    loss = s.expect_string("loss_metric_", "loss_metric_2")
    margin, threshold = (s.float(), s.float()) if loss == "loss_metric_2" else (0.1, 0.75)
    layers = face_resnet_layers()
    # The wrappers' version numbers, output side first; the innermost add_layer (on the input
    # layer) is a specialisation with its own versions.
    versions: list[int] = []
    for i, layer in enumerate(reversed(layers)):
        if layer.kind in ("tag", "skip"):
            s.expect_int((1,), f"{layer.kind} layer version")
            versions.append(1)
        else:
            valid = (2, 3) if i == len(layers) - 1 else (1, 2)
            versions.append(s.expect_int(valid, "add_layer version"))
    versions.reverse()
    s.expect_string("input_rgb_image_sized")
    mean = (s.float(), s.float(), s.float())
    size = (s.uint(), s.uint())
    _expect(size, (NATIVE_SIZE, NATIVE_SIZE), "input size")
    arrays: dict[str, np.ndarray] = {}
    for i, (layer, version) in enumerate(zip(layers, versions, strict=True)):
        if layer.kind in ("tag", "skip"):
            continue
        arrays.update(_read_details(s, layer))
        _read_layer_state(s, version, on_input=i == 0)
    if s.pos != len(s.data):
        raise _FormatError(f"{len(s.data) - s.pos} bytes left after the last layer")
    return DlibFaceResNet(
        arrays=arrays,
        input_mean=mean,
        input_size=NATIVE_SIZE,
        loss_margin=margin,
        loss_distance_threshold=threshold,
        path=Path(),
    )


def read_face_resnet(path: str | Path) -> DlibFaceResNet:
    """Read ``dlib_face_recognition_resnet_model_v1.dat`` (or a file of the same network).

    Raises:
        UserError: the file is missing, truncated, or not this network in dlib's format (one line,
            naming the file and what was found where).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read the face-recognition weights ({err.strerror})") from None
    try:
        net = _read_network(_Stream(data))
    except _FormatError as err:
        raise UserError(f"{path}: not dlib's face-recognition ResNet: {err}") from None
    if not np.allclose(net.input_mean, INPUT_MEAN, rtol=0, atol=1e-4):
        raise UserError(f"{path}: input channel means {net.input_mean} differ from dlib's {INPUT_MEAN}")
    return dataclasses.replace(net, path=path)
