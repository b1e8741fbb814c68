"""Helpers that write tiny fixture trees (never real data)."""

from pathlib import Path

import pytest
from PIL import Image


def write_image(path: Path, size=(8, 8), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128 if mode == "L" else (120, 90, 80)).save(path)
    return path


@pytest.fixture
def image():
    return write_image
