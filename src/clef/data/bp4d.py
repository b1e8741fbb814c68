"""BP4D(-Spontaneous) layout loader (docs/datasets.md, "BP4D").

Layout under ``root``::

    <subject>/<task>/<frame>.jpg                 frame number = file stem (not zero-padded)
    AUCoding/AU_OCC/<subject>_<task>.csv         header row; column "0" = frame, then AU numbers

AU values: 1 present, 0 absent, 9 not coded -> NaN in the record table (masked, never a label).
One record per coded row of an AU_OCC file. ``fold`` is the subject's part in the shipped 3-fold
protocol (NA for subjects it does not list). If the root holds the built-in world's side file
(:data:`SIDE_FILE`), its AU intensities (all 17 AUs) and per-frame expressions are merged in.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from clef.data.folds import load_protocol
from clef.data.problems import Problems, drop_repeats
from clef.data.reading import frame_files, read_csv_rows
from clef.data.records import concat_records, make_records
from clef.errors import UserError
from clef.labels import ALL_AUS, au_column
from clef.textfiles import not_utf8

SIDE_FILE = "clef_synth_labels.csv"
_CSV_NAME = re.compile(r"^(?P<subject>[^_]+)_(?P<task>[^_]+)\.csv$")
_VALID = {0.0, 1.0, 9.0}


def load_bp4d(root: str | Path, on_error: str = "raise", protocol: str = "bp4d") -> pd.DataFrame:
    """Turn a BP4D-layout folder into a record table (see :mod:`clef.data.records`).

    Raises :class:`UserError` naming the file (and line) when the layout is broken, unless
    ``on_error="skip"``: then bad rows are dropped and listed in ``records.attrs["skipped"]``.
    """
    problems = Problems(on_error)
    records = load_au_occ_tree(Path(root), "bp4d", problems)
    if (Path(root) / SIDE_FILE).exists():
        records = merge_side_file(records, Path(root) / SIDE_FILE, keys=["subject", "activity", "frame"])
    parts = load_protocol(protocol)
    records["fold"] = pd.array([parts.part_of(s) for s in records["subject"]], dtype="Int64")
    records.attrs["protocol"] = parts
    records.attrs["skipped"] = problems.skipped
    return records


def load_au_occ_tree(root: Path, dataset: str, problems: Problems) -> pd.DataFrame:
    """Records of every coded row of ``root/AUCoding/AU_OCC/*.csv`` (BP4D and BP4D+), fold NA.

    Every file must have the same (known) AU columns: a file that lacks an AU the others code, or
    codes one they lack, is a problem (left out under ``skip``), never a silently uncoded column.
    """
    occ_dir = root / "AUCoding" / "AU_OCC"
    if not occ_dir.is_dir():
        raise UserError(f"{root}: not a {dataset} layout (missing folder AUCoding/AU_OCC)")
    csv_files = sorted(occ_dir.glob("*.csv"))
    if not csv_files:
        raise UserError(f"{occ_dir}: no <subject>_<task>.csv files")
    loaded = []
    for csv_path in csv_files:
        video = _load_video(root, csv_path, dataset, problems)
        if video is not None:
            loaded.append((csv_path, *video))
    if not loaded:
        raise UserError(f"{occ_dir}: no usable AU_OCC file")
    # The AU columns most files have are the dataset's; ties go to the first file's.
    usual = Counter(aus for _, _, aus in loaded).most_common(1)[0][0]
    example = next(path for path, _, aus in loaded if aus == usual)
    tables = []
    for csv_path, table, aus in loaded:
        if aus != usual:
            problems(f"{csv_path}, line 1: {_au_difference(aus, usual, example)}")
        else:
            tables.append(table)
    records = concat_records(tables)
    if records.empty:
        raise UserError(f"{occ_dir}: no usable coded frame in any AU_OCC file")
    return records


def _au_difference(aus: tuple[int, ...], usual: tuple[int, ...], example: Path) -> str:
    lacks = [str(a) for a in usual if a not in aus]
    extra = [str(a) for a in aus if a not in usual]
    parts = []
    if lacks:
        parts.append(f"no column for AU {', '.join(lacks)}")
    if extra:
        parts.append(f"a column for AU {', '.join(extra)}")
    return (
        f"{' and '.join(parts)}, unlike {example.name} and the other AU_OCC files; "
        "every file must have the same AU columns"
    )


def _load_video(
    root: Path, csv_path: Path, dataset: str, problems: Problems
) -> tuple[pd.DataFrame, tuple[int, ...]] | None:
    """(records, AU numbers of its columns) of one AU_OCC file, or None when the file is unusable."""
    match = _CSV_NAME.match(csv_path.name)
    if not match:
        problems(f"{csv_path}: file name is not <subject>_<task>.csv")
        return None
    subject, task = match["subject"], match["task"]
    try:
        table = read_csv_rows(csv_path, problems)
    except UserError as err:  # unreadable, not UTF-8, empty, a repeated column: this file is unusable
        problems(str(err))
        return None
    header = [c for c in table.columns if c != "line"]
    if not header or header[0] != "0":
        problems(f"{csv_path}, line 1: first column must be the frame number with header '0'")
        return None
    au_cols = {}
    for name in header[1:]:
        if not (name.isascii() and name.isdigit()):
            problems(f"{csv_path}, line 1: column {name!r} is not an AU number")
            return None
        if int(name) in ALL_AUS:
            au_cols[int(name)] = name
    lines = table["line"].to_numpy()
    frame_cells = table["0"].tolist()
    is_frame = np.array([f.isascii() and f.isdigit() for f in frame_cells], dtype=bool)
    values = _au_values(table[list(au_cols.values())].to_numpy(dtype=str))
    bad_value = ~np.isin(values, list(_VALID))
    keep = np.ones(len(table), dtype=bool)
    for row in np.flatnonzero(~is_frame | bad_value.any(axis=1)):
        where = f"{csv_path}, line {lines[row]}"
        if not is_frame[row]:
            problems(f"{where}: frame number {frame_cells[row]!r} is not a whole number (digits only)")
        else:
            col = list(au_cols.values())[int(np.argmax(bad_value[row]))]
            problems(f"{where}: AU {col} value {table[col].iloc[row]!r} is not 0, 1 or 9")
        keep[row] = False
    frames = np.array([int(f) if ok else -1 for f, ok in zip(frame_cells, is_frame, strict=True)], np.int64)
    rows = np.flatnonzero(keep)
    keep[rows] = drop_repeats(
        frames[rows].tolist(),
        lambda i: {f"AU{c}": table[c].iloc[rows[i]] for c in header[1:]},
        lambda i: (csv_path, int(lines[rows[i]])),
        problems,
        what=lambda frame: f"frame {frame}",
    )
    frame_dir = root / subject / task
    images = frame_files(frame_dir, problems)
    paths = []
    for row in np.flatnonzero(keep):
        image = images.get(int(frames[row]))
        if image is None:
            problems(f"{csv_path}, line {lines[row]}: image for frame {frames[row]} not found in {frame_dir}")
            keep[row] = False
        else:
            paths.append(str(image))
    values = np.where(values == 9.0, np.nan, values)[keep]
    columns: dict[str, object] = {
        "dataset": dataset,
        "path": np.array(paths, dtype=object),
        "subject": subject,
        "activity": task,
        "frame": frames[keep],
    }
    for j, au in enumerate(au_cols):
        columns[au_column(au)] = values[:, j]
    return make_records(columns, int(keep.sum())), tuple(sorted(au_cols))


def _au_values(cells: np.ndarray) -> np.ndarray:
    """AU cells (strings) as numbers; NaN where a cell is not a number (reported by the caller)."""
    values = np.full(cells.shape, np.nan)
    plain = np.zeros(cells.shape, dtype=bool)
    for text in ("0", "1", "9"):  # nearly every cell: skip parsing them one by one
        hit = cells == text
        values[hit], plain = float(text), plain | hit
    for index in zip(*np.nonzero(~plain), strict=True):  # e.g. "1.0", or bad cells
        values[index] = pd.to_numeric(cells[index], errors="coerce")
    return values


def merge_side_file(
    records: pd.DataFrame, side_path: Path, keys: list[str], overwrite: bool = True
) -> pd.DataFrame:
    """Merge the built-in world's side file (intensities of all AUs, expression) into ``records``.

    The side file has the key columns, ``expression`` and ``AU<n>_intensity`` columns. Its expression
    fills the record's ``expression``; rows of the records with no side-file row keep NA. With
    ``overwrite=False`` intensity columns the records already have (DISFA's coded intensities) are
    kept and only the others are added.
    """
    side = read_side_file(side_path, dtype={k: str for k in keys if k != "frame"})
    missing = [k for k in keys if k not in side.columns]
    if missing:
        raise UserError(f"{side_path}: missing columns {missing}")
    repeated = side[side.duplicated(keys, keep=False)]
    if len(repeated):
        key = ", ".join(f"{k} {repeated[k].iloc[0]}" for k in keys)
        raise UserError(
            f"{side_path}: {len(repeated)} rows share a key (e.g. {key}); each key must appear once"
        )
    extra = [c for c in side.columns if c.endswith("_intensity") or c == "expression"]
    if not overwrite:
        extra = [c for c in extra if c == "expression" or c not in records.columns]
    merged = records.drop(columns=[c for c in extra if c in records.columns]).merge(
        side[keys + extra].astype({k: records[k].dtype for k in keys}), on=keys, how="left"
    )
    merged["expression"] = merged["expression"].astype("string")
    merged.attrs = dict(records.attrs)
    return concat_records([merged])


def read_side_file(path: Path, dtype: dict[str, type]) -> pd.DataFrame:
    """The built-in world's side file as a table; a file that is not UTF-8 CSV is a :class:`UserError`."""
    try:
        return pd.read_csv(path, dtype=dtype, encoding="utf-8")
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{path}: cannot parse as CSV ({err})") from None
