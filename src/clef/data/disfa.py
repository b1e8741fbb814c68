"""DISFA layout loader, left camera (docs/datasets.md, "DISFA").

Layout under ``root``::

    ActionUnit_Labels/SNxxx/SNxxx_au<N>.txt   one line per frame "frameIdx,intensity"
                                              (frameIdx 1-based, intensity 0-5)
    SNxxx/<i>.png                             left-camera frames as extracted (usually 0-based)

Frame offset: label line ``frameIdx`` k is the image numbered ``k - 1 + first_frame``. The default
``first_frame=0`` fits frames extracted 0-based (label frame 1 = ``0.png``); pass ``first_frame=1``
when the frames were extracted 1-based. The record's ``frame`` is the image number on disk.

Labels: the 12 coded AUs (:data:`clef.labels.DISFA_CODED_AUS`) become ``AU<n>`` occurrence columns,
**present = intensity >= 2**, and ``AU<n>_intensity`` columns carry the raw intensities. A frame
that is missing from one AU's file is uncoded (NaN) for that AU, never absent. AU label files of
other AUs are ignored. ``fold`` is the subject's part in the shipped DISFA 3-fold protocol. DISFA has
no activities. If the root holds the built-in world's side file (:data:`clef.data.bp4d.SIDE_FILE`,
keyed by ``subject`` and ``frame`` = image number), its expression and the intensities of the AUs
DISFA does not code are merged in.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from clef.data.bp4d import SIDE_FILE, merge_side_file
from clef.data.folds import load_protocol
from clef.data.problems import Problems
from clef.data.reading import frame_files
from clef.data.records import concat_records, make_records
from clef.errors import UserError
from clef.labels import DISFA_CODED_AUS, au_column, au_intensity_column
from clef.textfiles import read_text

LABEL_DIR = "ActionUnit_Labels"
PRESENT_AT = 2  # DISFA convention: an AU is present when its intensity is at least 2
_AU_FILE = re.compile(r"^(?P<subject>.+)_au(?P<au>\d+)\.txt$", re.IGNORECASE)


def load_disfa(
    root: str | Path, on_error: str = "raise", first_frame: int = 0, protocol: str = "disfa"
) -> pd.DataFrame:
    """Turn a DISFA-layout folder into a record table (see :mod:`clef.data.records`).

    ``first_frame``: image number of label frame 1 (0 for 0-based extraction, 1 for 1-based).
    Raises :class:`UserError` naming the file and line for a malformed label line, a missing AU file
    or a missing image, unless ``on_error="skip"``: then the line (that AU of that frame becomes
    uncoded), the AU file (uncoded for that subject) or the frame is dropped and counted in
    ``records.attrs["skipped"]``.
    """
    root = Path(root)
    if isinstance(first_frame, bool) or not isinstance(first_frame, int | np.integer) or first_frame < 0:
        raise UserError(f"first_frame must be a non-negative integer, got {first_frame!r}")
    label_root = root / LABEL_DIR
    if not label_root.is_dir():
        raise UserError(f"{root}: not a DISFA layout (missing folder {LABEL_DIR})")
    subjects = sorted(p.name for p in label_root.iterdir() if p.is_dir())
    if not subjects:
        raise UserError(f"{label_root}: no SNxxx subject folders")
    problems = Problems(on_error)
    parts = load_protocol(protocol)
    tables = []
    for subject in subjects:
        table = _load_subject(root, subject, int(first_frame), problems)
        if table is not None:
            table["fold"] = pd.array([parts.part_of(subject)] * len(table), dtype="Int64")
            tables.append(table)
    if not tables:
        raise UserError(f"{label_root}: no usable subject")
    records = concat_records(tables)
    side = root / SIDE_FILE
    if side.exists():
        records = merge_side_file(records, side, keys=["subject", "frame"], overwrite=False)
    records.attrs["protocol"] = parts
    records.attrs["skipped"] = problems.skipped
    return records


def _load_subject(root: Path, subject: str, first_frame: int, problems: Problems) -> pd.DataFrame | None:
    subject_dir = root / LABEL_DIR / subject
    files: dict[int, Path] = {}
    for path in sorted(subject_dir.iterdir()):
        match = _AU_FILE.match(path.name)
        if match and match["subject"] == subject and int(match["au"]) in DISFA_CODED_AUS:
            au = int(match["au"])
            if au in files:  # e.g. SN001_au1.txt and SN001_AU01.txt
                problems(f"{path}: a second label file for AU{au} (the first is {files[au].name}); keep one")
                continue
            files[au] = path
    intensities: dict[int, dict[int, int]] = {}  # AU -> label frame -> intensity
    where: dict[int, tuple[Path, int]] = {}  # label frame -> (file, line) first seen, for messages
    for au in DISFA_CODED_AUS:
        if au not in files:
            problems(f"{subject_dir}: missing label file {subject}_au{au}.txt")
            continue
        intensities[au] = _read_au_file(files[au], problems, where)
    if not intensities:
        return None
    images = frame_files(root / subject, problems)
    label_frames = sorted(where)
    keep, paths = [], []
    for k in label_frames:
        image = images.get(k - 1 + first_frame)
        if image is None:
            path, line = where[k]
            problems(
                f"{path}, line {line}: image for label frame {k} (image number {k - 1 + first_frame}, "
                f"first_frame={first_frame}) not found in {root / subject}"
            )
            continue
        keep.append(k)
        paths.append(str(image))
    if not keep:
        return None
    columns: dict[str, object] = {
        "dataset": "disfa",
        "path": np.array(paths, dtype=object),
        "subject": subject,
        "frame": np.array(keep, dtype=np.int64) - 1 + first_frame,
    }
    for au in DISFA_CODED_AUS:
        by_frame = intensities.get(au, {})
        raw = np.array([by_frame.get(k, np.nan) for k in keep], dtype=np.float64)
        columns[au_intensity_column(au)] = raw
        columns[au_column(au)] = np.where(np.isnan(raw), np.nan, (raw >= PRESENT_AT).astype(np.float64))
    return make_records(columns, len(keep))


def _read_au_file(path: Path, problems: Problems, where: dict[int, tuple[Path, int]]) -> dict[int, int]:
    """Label frame -> intensity of one ``SNxxx_au<N>.txt``; bad lines go to ``problems``."""
    values: dict[int, int] = {}
    first_line: dict[int, int] = {}
    conflicting: set[int] = set()
    try:
        text = read_text(path)
    except UserError as err:  # unreadable or not UTF-8: that AU is uncoded for this subject
        problems(str(err))
        return values
    if not text.strip():
        problems(f"{path}: the file is empty (expected one 'frameIdx,intensity' line per frame)")
        return values
    for line_no, line in enumerate(text.split("\n"), start=1):  # split("\n"): lines as editors count them
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2 or not all(f.isascii() and f.isdigit() for f in fields):
            problems(
                f"{path}, line {line_no}: expected 'frameIdx,intensity' (integers), got {line.strip()!r}"
            )
            continue
        frame, intensity = int(fields[0]), int(fields[1])
        if frame < 1:
            problems(f"{path}, line {line_no}: frame index {frame} is not 1-based (must be >= 1)")
            continue
        if intensity > 5:
            problems(f"{path}, line {line_no}: intensity {intensity} is not 0-5")
            continue
        if frame in first_line:
            if intensity == values.get(frame, intensity) and frame not in conflicting:
                problems(f"{path}, line {line_no}: frame {frame} repeats line {first_line[frame]}")
            else:
                problems(
                    f"{path}, line {line_no}: frame {frame} is also on line {first_line[frame]} with another "
                    f"intensity ({values.get(frame, '?')} there, {intensity} here)"
                )
                conflicting.add(frame)
            continue
        values[frame] = intensity
        first_line[frame] = line_no
        where.setdefault(frame, (path, line_no))
    for frame in conflicting:  # no telling which intensity is right: the frame is uncoded for this AU
        problems(f"{path}, line {first_line[frame]}: frame {frame} has other intensities further down")
        del values[frame]
    return values
