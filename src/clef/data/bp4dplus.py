"""BP4D+ (MMSE) layout loader (datasets.md, "BP4D+").

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
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clef.data.bp4d import load_au_occ_tree
from clef.data.folds import generate_protocol, load_protocol_file, save_protocol
from clef.data.problems import Problems

FOLD_FILE_NAME = "bp4dplus_folds.yaml"


def load_bp4dplus(
    root: str | Path,
    on_error: str = "raise",
    folds: str | Path | None = None,
    seed: int = 0,
    n_parts: int = 3,
    save_folds: str | Path | None = None,
) -> pd.DataFrame:
    """Turn a BP4D+-layout folder into a record table with a subject-exclusive ``fold`` column.

    ``folds``: user fold file; subjects of the data it does not list are a problem (error, or dropped
    and counted under ``on_error="skip"``). Without it, ``n_parts`` parts are generated from ``seed``
    and saved to ``save_folds`` (a file path, or a folder that receives :data:`FOLD_FILE_NAME`).
    """
    problems = Problems(on_error)
    records = load_au_occ_tree(Path(root), "bp4dplus", problems)
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
