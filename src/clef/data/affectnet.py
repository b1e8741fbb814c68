"""AffectNet loader, 7 or 8 classes (docs/datasets.md, "AffectNet").

Layout under ``root``::

    Manually_Annotated_file_lists/training.csv     official training set
    Manually_Annotated_file_lists/validation.csv   official validation set = the test split
    Manually_Annotated_Images/<subDirectory_filePath>

CSV columns: ``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
expression, valence, arousal``; only the image path and ``expression`` are read. Codes:
0 neutral, 1 happiness, 2 sadness, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt, 8 none,
9 uncertain, 10 non-face. AffectNet-8 keeps 0-7, AffectNet-7 keeps 0-6; the other codes are dropped
and counted in ``records.attrs["dropped"]``. Split: training -> ``train``, validation -> ``test``.
Training is heavily imbalanced: see :func:`clef.data.sampling.class_balanced_weights`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clef.data.problems import Problems, drop_repeats
from clef.data.reading import FolderListing, read_csv_rows
from clef.data.records import concat_records, make_records
from clef.errors import UserError

LIST_DIR = "Manually_Annotated_file_lists"
IMAGE_DIR = "Manually_Annotated_Images"
SPLIT_FILES = {"train": "training.csv", "test": "validation.csv"}
# AffectNet's expression codes 0-10 in order; 0-7 map to canonical names.
CODE_NAMES: tuple[str, ...] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
    "none",
    "uncertain",
    "non-face",
)
CLASS_COUNTS = (7, 8)


def affectnet_classes(n_classes: int) -> tuple[str, ...]:
    """Class names of AffectNet-7 or AffectNet-8 in the dataset's code order."""
    if n_classes not in CLASS_COUNTS:
        raise UserError(f"AffectNet has 7 or 8 classes, not {n_classes!r}")
    return CODE_NAMES[:n_classes]


def load_affectnet(root: str | Path, on_error: str = "raise", n_classes: int = 8) -> pd.DataFrame:
    """Turn an AffectNet folder into a record table of the ``n_classes`` (7 or 8) expressions.

    Raises :class:`UserError` naming the file and line for a malformed row, an expression code outside
    0-10, an image listed twice (in one file or both) or a missing image, unless ``on_error="skip"``
    (dropped and counted; an image listed twice with different labels or splits loses every row).
    """
    root = Path(root)
    classes = affectnet_classes(n_classes)
    list_dir = root / LIST_DIR
    if not list_dir.is_dir():
        raise UserError(f"{root}: not an AffectNet layout (missing folder {LIST_DIR})")
    problems = Problems(on_error)
    listing = FolderListing()
    dropped = {f"{code} {CODE_NAMES[code]}": 0 for code in range(n_classes, len(CODE_NAMES))}
    rows = []  # (split, image path as written, code, file, line) of every row with a valid code
    for split, file_name in SPLIT_FILES.items():
        csv_path = list_dir / file_name
        if not csv_path.is_file():
            raise UserError(f"{root}: missing {LIST_DIR}/{file_name}")
        table = read_csv_rows(csv_path, problems, required=("subDirectory_filePath", "expression"))
        for rel, code, line in zip(
            table["subDirectory_filePath"], table["expression"], table["line"], strict=True
        ):
            if not (code.isascii() and code.isdigit()) or int(code) >= len(CODE_NAMES):
                problems(f"{csv_path}, line {line}: expression {code!r} is not a code 0-10")
                continue
            rows.append((split, rel, int(code), csv_path, line))
    # One row per image over both files: an image in training and validation is a repeat too.
    keep = drop_repeats(
        [rel for _, rel, _, _, _ in rows],
        lambda i: {"split": rows[i][0], "expression": str(rows[i][2])},
        lambda i: (rows[i][3], rows[i][4]),
        problems,
        what=lambda rel: f"image {rel}",
    )
    kept: dict[str, tuple[list[str], list[str]]] = {split: ([], []) for split in SPLIT_FILES}
    for (split, rel, code, csv_path, line), ok in zip(rows, keep, strict=True):
        if not ok:
            continue
        if code >= n_classes:
            dropped[f"{code} {CODE_NAMES[code]}"] += 1
            continue
        image = root / IMAGE_DIR / rel
        if not rel or not listing.exists(image):
            problems(f"{csv_path}, line {line}: image {image} not found")
            continue
        kept[split][0].append(str(image))
        kept[split][1].append(classes[code])
    tables = [
        make_records(
            {
                "dataset": f"affectnet{n_classes}",
                "path": np.array(paths, dtype=object),
                "split": split,
                "expression": np.array(labels, dtype=object),
            },
            len(paths),
        )
        for split, (paths, labels) in kept.items()
        if paths
    ]
    if not tables:
        raise UserError(f"{list_dir}: no usable rows")
    records = concat_records(tables)
    records.attrs.update(skipped=problems.skipped, dropped=dropped, classes=classes)
    return records


def load_affectnet7(root: str | Path, on_error: str = "raise") -> pd.DataFrame:
    """AffectNet-7 (codes 0-6); see :func:`load_affectnet`."""
    return load_affectnet(root, on_error=on_error, n_classes=7)


def load_affectnet8(root: str | Path, on_error: str = "raise") -> pd.DataFrame:
    """AffectNet-8 (codes 0-7); see :func:`load_affectnet`."""
    return load_affectnet(root, on_error=on_error, n_classes=8)
