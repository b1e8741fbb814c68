"""The generic CSV format for users' own data (registered as dataset ``csv``; see docs/data.md).

``root`` is the CSV file (or a folder holding ``labels.csv``). One header line, then one row per
image. Columns (only ``path`` is required; unknown columns are an error listing the valid ones):

=================  =========================================================================
``path``           image file, relative to the CSV's folder (or absolute)
``subject``        subject id; train/test selections are checked to share none
``activity``       activity / task id (e.g. ``T1``); stage-1 positives share an activity
``activity_text``  the activity's description; without ``activity`` the text is the id. One id
                   must always come with the same text
``frame``          frame number within the video (integer)
``split``          ``train``, ``val`` or ``test``
``fold``           part number (integer >= 1) of a subject-exclusive protocol
``expression``     canonical expression name (:data:`clef.labels.EXPRESSIONS`, any case)
``AU<n>``          AU occurrence: ``1`` present, ``0`` absent, ``9`` or empty = not coded (masked)
``AU<n>_intensity``  AU intensity 0-5, empty = unknown
=================  =========================================================================

Empty cells of the other optional columns are NA. Every bad cell raises :class:`UserError` naming the
file and line, or drops the row (counted) under ``on_error="skip"``. So does an image listed twice:
under ``skip`` an identical repeat is dropped, and both rows go when their labels differ.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from clef.data.problems import Problems, drop_repeats
from clef.data.reading import FolderListing, read_csv_rows
from clef.data.records import make_records
from clef.errors import UserError
from clef.labels import ALL_AUS, EXPRESSIONS

DEFAULT_NAME = "labels.csv"
TEXT_COLUMNS = ("subject", "activity", "activity_text")
INT_COLUMNS = ("frame", "fold")
SPLITS = ("train", "val", "test")
_AU = re.compile(r"^AU(?P<au>\d+)(?P<intensity>_intensity)?$")
_OCCURRENCE = {"0": 0.0, "1": 1.0, "9": np.nan, "": np.nan}


def load_csv(root: str | Path, on_error: str = "raise") -> pd.DataFrame:
    """Turn a generic CSV (format above) into a record table (see :mod:`clef.data.records`)."""
    csv_path = Path(root)
    if csv_path.is_dir():
        csv_path = csv_path / DEFAULT_NAME
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: no such CSV file (give the file, or a folder holding {DEFAULT_NAME})")
    problems = Problems(on_error)
    table = read_csv_rows(csv_path, problems, required=("path",))
    au_columns = _check_columns(csv_path, [c for c in table.columns if c != "line"])
    base = csv_path.parent
    listing = FolderListing()
    parsed, places, written = [], [], {}
    text_of: dict[str, tuple[str, int]] = {}
    for record in table.to_dict("records"):
        line, cell = record["line"], record["path"]
        row = _parse_row(record, csv_path, base, listing, au_columns, text_of, problems)
        if row is not None:
            parsed.append(row)
            places.append((csv_path, line))
            written.setdefault(row["path"], cell)
    # One row per image: the same file twice (also as "a/x.png" and "./a/x.png") is a repeat.
    keep = drop_repeats(
        [row["path"] for row in parsed],
        lambda i: {k: _shown(v) for k, v in parsed[i].items() if k != "path"},
        places.__getitem__,
        problems,
        what=lambda path: f"image {written[path]}",
    )
    rows: dict[str, list] = {c: [] for c in table.columns if c != "line"}
    for row in (r for r, k in zip(parsed, keep, strict=True) if k):
        for name, value in row.items():
            rows[name].append(value)
    n = len(rows["path"])
    if n == 0:
        raise UserError(f"{csv_path}: no usable rows")
    columns: dict[str, object] = {"dataset": "csv"}
    for name, values in rows.items():
        if name in au_columns:
            columns[name] = np.array(values, dtype=np.float64)
        else:
            columns[name] = np.array(values, dtype=object)
    if "activity_text" in columns and "activity" not in columns:
        columns["activity"] = columns["activity_text"]
    records = make_records(columns, n)
    records.attrs["skipped"] = problems.skipped
    return records


def _check_columns(csv_path: Path, names: list[str]) -> set[str]:
    """AU columns among ``names``; raises naming line 1 for an unknown column (read_csv_rows has
    already refused a repeated one)."""
    fixed = {"path", *TEXT_COLUMNS, *INT_COLUMNS, "split", "expression"}
    au_columns = set()
    for name in names:
        if name in fixed:
            continue
        match = _AU.match(name)
        if match is None:
            raise UserError(
                f"{csv_path}, line 1: unknown column {name!r}; valid: {', '.join(sorted(fixed))}, "
                "AU<n>, AU<n>_intensity"
            )
        if int(match["au"]) not in ALL_AUS:
            raise UserError(
                f"{csv_path}, line 1: column {name!r} names an unknown AU; known AUs: "
                f"{', '.join(str(a) for a in ALL_AUS)}"
            )
        au_columns.add(name)
    return au_columns


def _parse_row(
    record: dict,
    csv_path: Path,
    base: Path,
    listing: FolderListing,
    au_columns: set[str],
    text_of: dict[str, tuple[str, int]],
    problems: Problems,
) -> dict | None:
    """Parsed values of one row, or None after reporting its first bad cell to ``problems``."""
    line = record.pop("line")
    where = f"{csv_path}, line {line}"
    out: dict[str, object] = {}
    for name, cell in record.items():
        if name == "path":
            if not cell:
                problems(f"{where}: empty path")
                return None
            image = Path(cell) if Path(cell).is_absolute() else base / cell
            if not listing.exists(image):
                problems(f"{where}: image {image} not found")
                return None
            out[name] = str(image)
        elif name in TEXT_COLUMNS:
            out[name] = cell or pd.NA
        elif name in INT_COLUMNS:
            if cell and not (cell.isascii() and cell.isdigit()):
                problems(f"{where}: {name} {cell!r} is not a non-negative integer")
                return None
            out[name] = int(cell) if cell else pd.NA
        elif name == "split":
            if cell and cell not in SPLITS:
                problems(f"{where}: split {cell!r} is not one of {', '.join(SPLITS)}")
                return None
            out[name] = cell or pd.NA
        elif name == "expression":
            if cell and cell.lower() not in EXPRESSIONS:
                problems(f"{where}: unknown expression {cell!r}; valid: {', '.join(EXPRESSIONS)}")
                return None
            out[name] = cell.lower() or pd.NA
        elif name.endswith("_intensity"):
            value = _float_or_none(cell)
            if cell and (value is None or not 0.0 <= value <= 5.0):
                problems(f"{where}: {name} {cell!r} is not a number 0-5")
                return None
            out[name] = value if cell else np.nan
        else:
            if cell not in _OCCURRENCE:
                problems(f"{where}: {name} {cell!r} is not 0, 1, 9 or empty (9 / empty = not coded)")
                return None
            out[name] = _OCCURRENCE[cell]
    activity, text = record.get("activity", ""), record.get("activity_text", "")
    if activity and text:
        first = text_of.setdefault(activity, (text, line))
        if first[0] != text:
            problems(
                f"{where}: activity {activity!r} has text {text!r} but line {first[1]} gave it {first[0]!r}"
            )
            return None
    return out


def _shown(value: object) -> str:
    """A parsed cell as text for comparing rows: "" when empty or not coded, 1 for 1.0."""
    if value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _float_or_none(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None
