"""Dataset names users type, mapped to their loaders (``root -> record table``).

Every loader takes ``(root, on_error="raise", **options)``; :func:`loader_options` lists the options
one accepts, so the command line can validate ``--option KEY=VALUE`` before loading.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from clef.data.affectnet import load_affectnet7, load_affectnet8
from clef.data.bp4d import load_bp4d
from clef.data.bp4dplus import load_bp4dplus
from clef.data.disfa import load_disfa
from clef.data.ferplus import load_ferplus
from clef.data.generic_csv import load_csv
from clef.data.rafdb import load_rafdb
from clef.errors import UserError

DATASETS: dict[str, Callable[..., pd.DataFrame]] = {
    "bp4d": load_bp4d,
    "bp4dplus": load_bp4dplus,
    "disfa": load_disfa,
    "rafdb": load_rafdb,
    "ferplus": load_ferplus,
    "affectnet7": load_affectnet7,
    "affectnet8": load_affectnet8,
    "csv": load_csv,
}


def loader_options(name: str) -> dict[str, object]:
    """Options (besides ``root``) the loader of ``name`` accepts, with their defaults."""
    _check_name(name)
    params = inspect.signature(DATASETS[name]).parameters
    return {k: p.default for k, p in params.items() if k != "root"}


def load_dataset(name: str, root: str | Path, **options) -> pd.DataFrame:
    """Load dataset ``name`` from ``root``; an unknown name or option lists the valid ones."""
    _check_name(name)
    valid = loader_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(f"dataset {name!r} has no option {', '.join(unknown)}; valid: {', '.join(valid)}")
    root = Path(root)
    if not root.exists():
        raise UserError(f"dataset root {root} does not exist")
    return DATASETS[name](root, **options)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")
