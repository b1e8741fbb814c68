"""Reading loader input: CSV files as strings with their line numbers, and cached folder listings.

Loaders validate every field themselves, so CSV cells are read as plain strings (an empty cell stays
``""``, never a silent NaN) and each row knows its 1-based line number in the file for error messages.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from clef.data.problems import Problems
from clef.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_csv_rows(
    path: Path, problems: Problems, required: tuple[str, ...] | list[str] = (), header: bool = True
) -> pd.DataFrame:
    """Read ``path`` as a table of stripped strings plus an int column ``line`` (1-based file line).

    With ``header=True`` the first line names the columns (stripped of blanks); a missing
    ``required`` column raises :class:`UserError` naming the file and line 1. With ``header=False``
    columns are numbered 0, 1, .... Blank lines are ignored. A row with the wrong number of fields is
    reported to ``problems`` (file and line) and left out, never padded with empty cells.
    """
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    rows, lines = [], []
    with handle:
        reader = csv.reader(handle)
        try:
            names = _header(path, reader, required) if header else None
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                if names is None:
                    names = list(range(len(fields)))
                if len(fields) != len(names):
                    problems(
                        f"{path}, line {reader.line_num}: expected {len(names)} fields, found {len(fields)}"
                    )
                    continue
                rows.append([f.strip() for f in fields])
                lines.append(reader.line_num)
        except (csv.Error, UnicodeDecodeError) as err:
            raise UserError(f"{path}, line {reader.line_num}: cannot parse as CSV ({err})") from None
    table = pd.DataFrame(rows, columns=names if names is not None else [], dtype=object)
    table["line"] = pd.array(lines, dtype="int64")
    return table


def _header(path: Path, reader, required) -> list[str]:
    first = next(reader, None)
    if first is None:
        raise UserError(f"{path}: the file is empty")
    names = [f.strip() for f in first]
    missing = [c for c in required if c not in names]
    if missing:
        raise UserError(f"{path}, line 1: missing column(s) {', '.join(missing)}; found {', '.join(names)}")
    return names


def frame_files(frame_dir: Path) -> dict[int, Path]:
    """Frame number -> image path for every ``<int>.<image suffix>`` in ``frame_dir``.

    Zero-padded stems (``00012.png``) count as their number. Empty when the folder is missing.
    """
    if not frame_dir.is_dir():
        return {}
    files = {}
    for path in frame_dir.iterdir():
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stem.isdigit():
            files[int(path.stem)] = path
    return files


class FolderListing:
    """Answers "does this file exist" from one cached listing per folder.

    Datasets with 10^5 images spread over a few thousand folders are checked with one ``listdir`` per
    folder instead of one ``stat`` per image.
    """

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def exists(self, path: Path) -> bool:
        folder = path.parent
        if folder not in self._names:
            self._names[folder] = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        return path.name in self._names[folder]
