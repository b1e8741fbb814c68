"""Reading loader input: CSV files as strings with their line numbers, frame folders, folder listings.

Loaders validate every field themselves, so CSV cells are read as plain strings (an empty cell stays
``""``, never a silent NaN) and each row knows its 1-based line number in the file for error messages.
Text must be UTF-8 (:mod:`clef.textfiles`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from clef.data.problems import Problems
from clef.errors import UserError
from clef.textfiles import ENCODING, not_utf8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_csv_rows(
    path: Path, problems: Problems, required: tuple[str, ...] | list[str] = (), header: bool = True
) -> pd.DataFrame:
    """Read ``path`` as a table of stripped strings plus an int column ``line`` (1-based file line).

    With ``header=True`` the first line names the columns (stripped of blanks); a missing
    ``required`` column or a column name given twice raises :class:`UserError` naming the file and
    line 1. With ``header=False`` columns are numbered 0, 1, .... Blank lines are ignored. A row with
    the wrong number of fields is reported to ``problems`` (file and line) and left out, never padded
    with empty cells. A file that is not UTF-8 raises, naming the line of the first bad byte.
    """
    try:
        handle = open(path, newline="", encoding=ENCODING)
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
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except csv.Error as err:
            raise UserError(f"{path}, line {reader.line_num}: cannot parse as CSV ({err})") from None
    table = pd.DataFrame(rows, columns=names if names is not None else [], dtype=object)
    table["line"] = pd.array(lines, dtype="int64")
    return table


def _header(path: Path, reader, required) -> list[str]:
    first = next(reader, None)
    if first is None:
        raise UserError(f"{path}: the file is empty")
    names = [f.strip() for f in first]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise UserError(f"{path}, line 1: repeated column(s) {', '.join(repeated)}")
    missing = [c for c in required if c not in names]
    if missing:
        raise UserError(f"{path}, line 1: missing column(s) {', '.join(missing)}; found {', '.join(names)}")
    return names


def frame_files(frame_dir: Path, problems: Problems) -> dict[int, Path]:
    """Frame number -> image path for every image ``<number>.<image suffix>`` in ``frame_dir``.

    The number is written in ASCII digits; zero-padded stems (``00012.png``) count as their number.
    Hidden files (``.*``, e.g. macOS's ``._12.jpg``) and files of other suffixes are not looked at.
    An image whose stem is not a frame number (``12.5.jpg``, ``12_copy.jpg``) and two images of one
    frame number (``12.jpg`` and ``012.jpg``, or ``12.jpg`` and ``12.png``) are problems; the
    images of such a frame are left out. Empty when the folder is missing.
    """
    if not frame_dir.is_dir():
        return {}
    files: dict[int, Path] = {}
    clashing: set[int] = set()
    for name in sorted(os.listdir(frame_dir)):  # sorted: the same messages on every file system
        stem, dot, suffix = name.rpartition(".")
        if name.startswith(".") or not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES:
            continue
        path = frame_dir / name
        if not (stem.isascii() and stem.isdigit()):
            problems(f"{path}: image file name is not a frame number (expected <number>.{suffix})")
            continue
        frame = int(stem)
        if frame in files:
            problems(f"{path}: frame {frame} has two images ({files[frame].name} and {name})")
            clashing.add(frame)
            continue
        files[frame] = path
    for frame in clashing:
        del files[frame]
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
