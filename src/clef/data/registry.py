"""Dataset names users type, mapped to their loaders (``root -> record table``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from clef.data.bp4d import load_bp4d
from clef.data.rafdb import load_rafdb
from clef.errors import UserError

DATASETS: dict[str, Callable[..., pd.DataFrame]] = {
    "bp4d": load_bp4d,
    "rafdb": load_rafdb,
}


def load_dataset(name: str, root: str | Path, **options) -> pd.DataFrame:
    """Load dataset ``name`` from ``root``; an unknown name lists the valid ones."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")
    root = Path(root)
    if not root.exists():
        raise UserError(f"dataset root {root} does not exist")
    return DATASETS[name](root, **options)
