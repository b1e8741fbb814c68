"""The record table: the one in-memory form every dataset loader returns.

A record table is a :class:`pandas.DataFrame`, one row per image, with these columns:

==================  ==========================================================================
``dataset``         loader name (``bp4d``, ``rafdb``, ...)
``path``            absolute path of the image file (str)
``subject``         subject id (str), NA when the dataset has none (in-the-wild sets)
``activity``        activity / task id (str, e.g. ``T1``), NA when none
``frame``           frame number within the video (nullable int), NA for still images
``split``           official split (``train`` / ``test`` / ``val``), NA for cross-validated sets
``fold``            part number of the subject in a k-fold protocol (nullable int), NA when none
``expression``      canonical expression name (see :mod:`clef.labels`), NA when unlabelled
``AU<n>``           AU occurrence: 1.0 present, 0.0 absent, NaN not coded (masked, never a label)
``activity_text``   optional: the activity's description text (str), only where the dataset
                    supplies one per record (the generic CSV); else texts come from a data file
``AU<n>_intensity`` optional AU intensity 0-5 (float), NaN when unknown
==================  ==========================================================================

Loaders also fill ``records.attrs``: ``skipped`` (messages of bad items dropped under
``on_error="skip"``), and where it applies ``dropped`` (counts of rows the dataset's protocol
removes, e.g. FERPlus unknown / NF), ``classes`` (the dataset's expression names in its own class
order) and ``protocol`` (the :class:`clef.data.folds.Protocol` behind the ``fold`` column).

Which AU columns exist depends on the dataset (BP4D: 12, DISFA: 12 coded, 8 benchmarked).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clef.labels import ALL_AUS, au_column, au_intensity_column

BASE_COLUMNS: tuple[str, ...] = (
    "dataset",
    "path",
    "subject",
    "activity",
    "frame",
    "split",
    "fold",
    "expression",
)
_STRING_COLUMNS = ("dataset", "path", "subject", "activity", "split", "expression")
_INT_COLUMNS = ("frame", "fold")
# Optional string columns a loader may add after the base columns.
OPTIONAL_STRING_COLUMNS: tuple[str, ...] = ("activity_text",)


def make_records(columns: dict[str, object], n: int) -> pd.DataFrame:
    """Build a record table of ``n`` rows from column values (scalars or arrays).

    Base columns that are not given are filled with NA; AU columns are cast to float.
    Returns columns in the canonical order: base columns, optional string columns, then ``AU<n>``,
    then intensities.
    """
    data: dict[str, object] = {}
    for name in BASE_COLUMNS:
        value = columns.get(name, pd.NA)
        if name in _INT_COLUMNS:
            data[name] = pd.array(np.broadcast_to(np.asarray(value, dtype=object), (n,)), dtype="Int64")
        else:
            data[name] = pd.array(np.broadcast_to(np.asarray(value, dtype=object), (n,)), dtype="string")
    for name in OPTIONAL_STRING_COLUMNS:
        if name in columns:
            data[name] = pd.array(
                np.broadcast_to(np.asarray(columns[name], dtype=object), (n,)), dtype="string"
            )
    extra = [c for c in columns if c not in BASE_COLUMNS and c not in OPTIONAL_STRING_COLUMNS]
    unknown = [c for c in extra if c not in _au_like_columns()]
    if unknown:
        raise ValueError(f"unknown record columns: {unknown}")
    for name in sorted(extra, key=_column_order):
        data[name] = np.broadcast_to(np.asarray(columns[name], dtype=np.float64), (n,)).copy()
    return pd.DataFrame(data)


def _au_like_columns() -> set[str]:
    return {au_column(a) for a in ALL_AUS} | {au_intensity_column(a) for a in ALL_AUS}


def _column_order(name: str) -> tuple[int, int]:
    is_intensity = name.endswith("_intensity")
    return (int(is_intensity), int(name[2:].split("_")[0]))


def record_aus(records: pd.DataFrame) -> tuple[int, ...]:
    """AU numbers that have an occurrence column in ``records``, in ascending order."""
    return tuple(a for a in ALL_AUS if au_column(a) in records.columns)


def au_targets(records: pd.DataFrame, aus: tuple[int, ...] | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """AU occurrence targets and their coded-mask.

    Returns ``(targets, mask)``, both shaped (N, J) for J = len(aus): ``targets`` float32 0/1 (0 where
    not coded), ``mask`` bool, True where the label is coded. A missing AU column raises KeyError.
    """
    values = records[[au_column(a) for a in aus]].to_numpy(dtype=np.float64)
    mask = ~np.isnan(values)
    return np.where(mask, values, 0.0).astype(np.float32), mask


def concat_records(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate record tables, keeping column order canonical."""
    merged = pd.concat(tables, ignore_index=True)
    optional = [c for c in OPTIONAL_STRING_COLUMNS if c in merged.columns]
    fixed = set(BASE_COLUMNS) | set(optional)
    extra = sorted((c for c in merged.columns if c not in fixed), key=_column_order)
    return merged[list(BASE_COLUMNS) + optional + extra]
