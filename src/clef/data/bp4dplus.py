"""BP4D+ (MMSE) layout loader (docs/datasets.md, "BP4D+").

Same on-disk layout as BP4D (:mod:`clef.data.bp4d`): frames ``<subject>/<task>/<frame>.jpg`` and
``AUCoding/AU_OCC/<subject>_<task>.csv`` (header ``0`` then AU numbers; 1 present, 0 absent, 9 not
coded -> NaN). BP4D+ has tasks T1-T10 and codes AU occurrence on a subset (T1, T6, T7, T8): one
record per coded row of whichever AU_OCC files exist.

BP4D+ has no official folds. ``folds=<file>`` reads a user fold file (YAML in the shipped format or
CSV ``subject,part``, see :func:`clef.data.folds.load_protocol_file`); otherwise subject-exclusive
parts are generated from ``seed`` over the subjects found (:func:`clef.data.folds.generate_protocol`)
and, when ``save_folds`` is given, written there so that the run can be repeated. The protocol is
returned in ``records.attrs["protocol"]`` and the fold file read or written in
``records.attrs["protocol_file"]``.

``uncoded_tasks=True`` also adds the frames of every ``<subject>/<task>/`` folder that has no AU_OCC
file (all AUs NaN, i.e. masked): stage-1 pre-training needs only the activity, so the tasks BP4D+
did not FACS-code still serve it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from clef.data.bp4d import SIDE_FILE, load_au_occ_tree, merge_side_file
from clef.data.folds import generate_protocol, load_protocol_file, save_protocol
from clef.data.problems import Problems
from clef.data.reading import frame_files
from clef.data.records import concat_records, make_records, record_aus
from clef.labels import au_column

FOLD_FILE_NAME = "bp4dplus_folds.yaml"
_TASK = re.compile(r"^T\d+$")


def load_bp4dplus(
    root: str | Path,
    on_error: str = "raise",
    folds: str | Path | None = None,
    seed: int = 0,
    n_parts: int = 3,
    save_folds: str | Path | None = None,
    uncoded_tasks: bool = False,
) -> pd.DataFrame:
    """Turn a BP4D+-layout folder into a record table with a subject-exclusive ``fold`` column.

    ``folds``: user fold file; subjects of the data it does not list are a problem (error, or dropped
    and counted under ``on_error="skip"``). Without it, ``n_parts`` parts are generated from ``seed``
    and saved to ``save_folds`` (a file path, or a folder that receives :data:`FOLD_FILE_NAME`).
    """
    problems = Problems(on_error)
    records = load_au_occ_tree(Path(root), "bp4dplus", problems)
    if uncoded_tasks:
        extra = _uncoded_frames(Path(root), records, problems)
        records = concat_records([records, extra]) if len(extra) else records
    if (Path(root) / SIDE_FILE).exists():
        records = merge_side_file(records, Path(root) / SIDE_FILE, keys=["subject", "activity", "frame"])
    if folds is not None:
        protocol = load_protocol_file(folds)
        unlisted = sorted(set(records["subject"]) - {s for p in protocol.parts.values() for s in p})
        for subject in unlisted:
            problems(f"{folds}: subject {subject} of {root} is not listed in any part")
        records = records[~records["subject"].isin(unlisted)].reset_index(drop=True)
        records.attrs["protocol_file"] = str(folds)
    else:
        protocol = generate_protocol(
            records["subject"], n_parts=n_parts, seed=seed, name=f"bp4dplus-seed{seed}"
        )
        if save_folds is not None:
            target = Path(save_folds)
            written = save_protocol(protocol, target / FOLD_FILE_NAME if target.is_dir() else target)
            records.attrs["protocol_file"] = str(written)
    records["fold"] = pd.array([protocol.part_of(s) for s in records["subject"]], dtype="Int64")
    records.attrs["protocol"] = protocol
    records.attrs["skipped"] = problems.skipped
    return records


def _uncoded_frames(root: Path, coded: pd.DataFrame, problems: Problems) -> pd.DataFrame:
    """Records (AUs all NaN) of the frames of ``<subject>/<task>/`` folders without an AU_OCC file."""
    done = set(zip(coded["subject"], coded["activity"], strict=True))
    paths, subjects, tasks, frames = [], [], [], []
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "AUCoding"):
        for task_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir() and _TASK.match(p.name)):
            if (subject_dir.name, task_dir.name) in done:
                continue
            for frame, path in sorted(frame_files(task_dir, problems).items()):
                paths.append(str(path))
                subjects.append(subject_dir.name)
                tasks.append(task_dir.name)
                frames.append(frame)
    columns = {
        "dataset": "bp4dplus",
        "path": np.array(paths, dtype=object),
        "subject": np.array(subjects, dtype=object),
        "activity": np.array(tasks, dtype=object),
        "frame": np.array(frames, dtype=np.int64),
    }
    columns.update({au_column(a): np.nan for a in record_aus(coded)})
    return make_records(columns, len(paths))
