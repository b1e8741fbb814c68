"""RAF-DB (basic) layout loader (docs/datasets.md, "RAF-DB").

Layout under ``root`` (the folder holding ``basic/``, or ``basic/`` itself)::

    basic/EmoLabel/list_patition_label.txt  "train_00001.jpg 5" per line, label 1-7 (sic: "patition")
    basic/Image/aligned/train_00001_aligned.jpg

Label order (1-based): 1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral,
mapped to canonical names. Split = file-name prefix (``train_`` / ``test_``). RAF-DB has no subjects.
If ``basic/`` holds the built-in world's side file (:data:`clef.data.bp4d.SIDE_FILE`), its AU
intensities are merged in. Its noise-free expression is not: like real RAF-DB, the official labels
(which carry the world's label noise) are what training and evaluation see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clef.data.bp4d import SIDE_FILE, read_side_file
from clef.data.problems import Problems, drop_repeats
from clef.data.records import concat_records, make_records
from clef.errors import UserError
from clef.labels import RAFDB_CLASSES
from clef.textfiles import read_text

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"


def load_rafdb(root: str | Path, on_error: str = "raise") -> pd.DataFrame:
    """Turn a RAF-DB (basic) folder into a record table (see :mod:`clef.data.records`)."""
    root = Path(root)
    basic = root / "basic" if (root / "basic").is_dir() else root
    label_file = basic / LABEL_FILE
    if not label_file.is_file():
        raise UserError(f"{root}: not a RAF-DB layout (missing basic/{LABEL_FILE})")
    image_dir = basic / "Image" / "aligned"
    present = {p.name for p in image_dir.iterdir()} if image_dir.is_dir() else set()
    problems = Problems(on_error)
    names, paths, splits, labels, places = [], [], [], [], []
    for line_no, line in enumerate(read_text(label_file).split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{label_file}, line {line_no}"
        if len(fields) != 2:
            problems(f"{where}: expected '<image> <label>', got {line.strip()!r}")
            continue
        name, label = fields
        if not (label.isascii() and label.isdigit()) or not 1 <= int(label) <= len(RAFDB_CLASSES):
            problems(f"{where}: label {label!r} is not 1-7 (1 surprise ... 7 neutral)")
            continue
        split = name.split("_", 1)[0]
        if split not in ("train", "test"):
            problems(f"{where}: image {name!r} does not start with train_ or test_")
            continue
        aligned = f"{Path(name).stem}_aligned.jpg"
        if aligned not in present:
            problems(f"{where}: image {image_dir / aligned} not found")
            continue
        names.append(Path(name).stem)
        paths.append(str(image_dir / aligned))
        splits.append(split)
        labels.append(RAFDB_CLASSES[int(label) - 1])
        places.append((label_file, line_no))
    # Keyed by the file-name stem, as the aligned image is: x.jpg and x.png both name x_aligned.jpg.
    keep = drop_repeats(
        names,
        lambda i: {"label": f"{RAFDB_CLASSES.index(labels[i]) + 1} ({labels[i]})"},
        places.__getitem__,
        problems,
        what=lambda stem: f"image {stem}",
    )
    names, paths, splits, labels = (
        [v for v, k in zip(col, keep, strict=True) if k] for col in (names, paths, splits, labels)
    )
    if not paths:
        raise UserError(f"{label_file}: no usable rows")
    records = make_records(
        {
            "dataset": "rafdb",
            "path": np.array(paths, dtype=object),
            "split": np.array(splits, dtype=object),
            "expression": np.array(labels, dtype=object),
        },
        len(paths),
    )
    side = basic / SIDE_FILE
    if side.exists():
        records = _merge_wild_side_file(records, names, side)
    records.attrs["skipped"] = problems.skipped
    records.attrs["classes"] = RAFDB_CLASSES
    return records


def _merge_wild_side_file(records: pd.DataFrame, names: list[str], side_path: Path) -> pd.DataFrame:
    side = read_side_file(side_path, dtype={"image": str})
    if "image" not in side.columns:
        raise UserError(f"{side_path}: missing column image")
    repeated = side["image"][side["image"].duplicated()]
    if len(repeated):
        raise UserError(f"{side_path}: image {repeated.iloc[0]} has more than one row; each must appear once")
    side = side.set_index("image")
    aligned = side.reindex(names)
    for col in (c for c in side.columns if c.endswith("_intensity")):
        records[col] = aligned[col].to_numpy(np.float64)
    merged = concat_records([records])
    merged.attrs = dict(records.attrs)
    return merged
