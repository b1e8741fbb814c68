"""Shared fixtures: the MTCNN detector (skipped with the install command when its weights are
absent) and real face photos taken from the installed scikit-image package."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from clef.errors import UserError
from clef.prep.mtcnn import MTCNN, find_weights


def skimage_data():
    return pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")


@pytest.fixture(scope="session")
def detector() -> MTCNN:
    try:
        weights = find_weights()
    except UserError as err:
        # CI sets CLEF_REQUIRE_MTCNN=1 so that missing weights fail loudly instead of skipping.
        if os.environ.get("CLEF_REQUIRE_MTCNN") == "1":
            pytest.fail(str(err))
        pytest.skip(str(err))
    return MTCNN(weights, device="cpu")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """(512, 512, 3) uint8 RGB portrait with one face."""
    return skimage_data().astronaut()


def lfw_as_rgb(gray: np.ndarray, side: int = 90, pad: int = 10) -> np.ndarray:
    """An lfw_subset image (25 x 25 float in [0, 1], face filling the frame) as an RGB uint8 picture
    with some border around the face (MTCNN needs context) and a size above its 20 px minimum."""
    img = np.pad((gray * 255).round().astype(np.uint8), pad // 3, mode="edge")
    img = np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR))
    return np.repeat(img[:, :, None], 3, axis=2)


@pytest.fixture(scope="session")
def lfw() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(faces, non-faces): the 100 + 100 images of skimage.data.lfw_subset() as RGB pictures."""
    data = skimage_data().lfw_subset()
    images = [lfw_as_rgb(x) for x in data]
    return images[:100], images[100:]
