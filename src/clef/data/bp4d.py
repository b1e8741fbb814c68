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
from pathlib import Path

import numpy as np
import pandas as pd

from clef.data.folds import load_protocol
from clef.data.problems import Problems
from clef.data.reading import frame_files
from clef.data.records import concat_records, make_records
from clef.errors import UserError
from clef.labels import ALL_AUS, au_column

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
    """Records of every coded row of ``root/AUCoding/AU_OCC/*.csv`` (BP4D and BP4D+), fold NA."""
    occ_dir = root / "AUCoding" / "AU_OCC"
    if not occ_dir.is_dir():
        raise UserError(f"{root}: not a {dataset} layout (missing folder AUCoding/AU_OCC)")
    csv_files = sorted(occ_dir.glob("*.csv"))
    if not csv_files:
        raise UserError(f"{occ_dir}: no <subject>_<task>.csv files")
    tables = []
    for csv_path in csv_files:
        table = _load_video(root, csv_path, dataset, problems)
        if table is not None:
            tables.append(table)
    if not tables:
        raise UserError(f"{occ_dir}: no usable AU_OCC file")
    return concat_records(tables)


def _load_video(root: Path, csv_path: Path, dataset: str, problems: Problems) -> pd.DataFrame | None:
    match = _CSV_NAME.match(csv_path.name)
    if not match:
        problems(f"{csv_path}: file name is not <subject>_<task>.csv")
        return None
    subject, task = match["subject"], match["task"]
    try:
        table = pd.read_csv(csv_path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        problems(f"{csv_path}: cannot parse ({err})")
        return None
    if table.columns[0].strip() != "0":
        problems(f"{csv_path}, line 1: first column must be the frame number with header '0'")
        return None
    au_cols = {}
    for col in table.columns[1:]:
        name = col.strip()
        if not name.isdigit():
            problems(f"{csv_path}, line 1: column {col!r} is not an AU number")
            return None
        if int(name) in ALL_AUS:
            au_cols[int(name)] = col
    frames = pd.to_numeric(table.iloc[:, 0], errors="coerce")
    values = table[list(au_cols.values())].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad_value = ~np.isin(values, list(_VALID))
    keep = np.ones(len(table), dtype=bool)
    for row in np.flatnonzero(frames.isna().to_numpy() | bad_value.any(axis=1)):
        line = row + 2  # header is line 1
        if pd.isna(frames.iloc[row]):
            problems(f"{csv_path}, line {line}: frame number {table.iloc[row, 0]!r} is not an integer")
        else:
            col = list(au_cols.values())[int(np.argmax(bad_value[row]))]
            raw = table[col].iloc[row]
            problems(f"{csv_path}, line {line}: AU {col.strip()} value {raw!r} is not 0, 1 or 9")
        keep[row] = False
    frame_dir = root / subject / task
    images = frame_files(frame_dir)
    paths = []
    for row in np.flatnonzero(keep):
        frame = int(frames.iloc[row])
        image = images.get(frame)
        if image is None:
            problems(f"{csv_path}, line {row + 2}: image for frame {frame} not found in {frame_dir}")
            keep[row] = False
        else:
            paths.append(str(image))
    values = np.where(values == 9.0, np.nan, values)[keep]
    columns: dict[str, object] = {
        "dataset": dataset,
        "path": np.array(paths, dtype=object),
        "subject": subject,
        "activity": task,
        "frame": frames.to_numpy()[keep].astype(np.int64),
    }
    for j, au in enumerate(au_cols):
        columns[au_column(au)] = values[:, j]
    return make_records(columns, int(keep.sum()))


def merge_side_file(
    records: pd.DataFrame, side_path: Path, keys: list[str], overwrite: bool = True
) -> pd.DataFrame:
    """Merge the built-in world's side file (intensities of all AUs, expression) into ``records``.

    The side file has the key columns, ``expression`` and ``AU<n>_intensity`` columns. Its expression
    fills the record's ``expression``; rows of the records with no side-file row keep NA. With
    ``overwrite=False`` intensity columns the records already have (DISFA's coded intensities) are
    kept and only the others are added.
    """
    side = pd.read_csv(side_path, dtype={k: str for k in keys if k != "frame"})
    missing = [k for k in keys if k not in side.columns]
    if missing:
        raise UserError(f"{side_path}: missing columns {missing}")
    extra = [c for c in side.columns if c.endswith("_intensity") or c == "expression"]
    if not overwrite:
        extra = [c for c in extra if c == "expression" or c not in records.columns]
    merged = records.drop(columns=[c for c in extra if c in records.columns]).merge(
        side[keys + extra].astype({k: records[k].dtype for k in keys}), on=keys, how="left"
    )
    merged["expression"] = merged["expression"].astype("string")
    merged.attrs = dict(records.attrs)
    return concat_records([merged])
