"""Fixtures of the model tests."""

from __future__ import annotations

import pytest

from tiny import BACKBONE_CASES


@pytest.fixture(params=list(BACKBONE_CASES))
def backbone_case(request):
    """(registry name, config overrides) for each backbone."""
    return BACKBONE_CASES[request.param]
