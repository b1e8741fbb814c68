"""FERPlus loader: FER2013 images with the FERPlus 10-annotator votes (docs/datasets.md, "FERPlus").

Layout under ``root``::

    fer2013new.csv     Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,
                       contempt,unknown,NF        (10 votes per image; empty Image name = not a face)

and the images in one of two forms:

* folders ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/`` holding ``fer0000000.png`` ...
  (Usage Training / PublicTest / PrivateTest), or
* FER2013's ``fer2013.csv`` (``emotion,pixels,Usage``; 48x48 grey pixels as a space-separated
  string) whose rows align 1:1 with ``fer2013new.csv``. The pixels are decoded once into PNG files
  under ``cache_dir`` (default ``<root>/clef_fer2013_images``), laid out like the folder form;
  existing files are reused, so a second load decodes nothing.

Majority protocol (:func:`majority_vote`): votes of 1 or less are zeroed; the arg-max is kept when its
votes are more than 50 % of the remaining total, else the image is unknown (so ties are unknown);
unknown and NF images are dropped. Classes in the file's order: neutral, happiness, surprise, sadness,
anger, disgust, fear, contempt. Split: Training -> train, PublicTest -> val, PrivateTest -> test
(results are reported on PrivateTest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clef.data.problems import Problems, drop_repeats
from clef.data.reading import FolderListing, read_csv_rows
from clef.data.records import make_records
from clef.errors import UserError
from clef.labels import EXPRESSIONS

LABEL_FILE = "fer2013new.csv"
PIXELS_FILE = "fer2013.csv"
DEFAULT_CACHE = "clef_fer2013_images"
# Vote columns in the file's order: the 8 classes in exactly the canonical order, then the two
# non-classes.
VOTE_COLUMNS: tuple[str, ...] = (*EXPRESSIONS, "unknown", "NF")
FERPLUS_CLASSES: tuple[str, ...] = VOTE_COLUMNS[:8]
UNKNOWN, NOT_FACE = 8, 9
USAGE_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
USAGE_FOLDER = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
SIDE = 48


def majority_vote(votes: np.ndarray) -> np.ndarray:
    """FERPlus majority labels of ``votes`` (N, 10) in :data:`VOTE_COLUMNS` order.

    Returns (N,) int: the class index 0-7, :data:`UNKNOWN` (8: voted unknown, or no strict
    majority, including ties and all-zero rows) or :data:`NOT_FACE` (9).
    """
    votes = np.asarray(votes, dtype=np.float64)
    if votes.ndim != 2 or votes.shape[1] != len(VOTE_COLUMNS):
        raise ValueError(f"votes must be (N, {len(VOTE_COLUMNS)}), got {votes.shape}")
    # A single vote is treated as annotator noise (FERPlus outlier removal).
    kept = np.where(votes <= 1, 0.0, votes)
    total = kept.sum(axis=1)
    top = kept.argmax(axis=1)
    # Strictly more than half: two classes can never both pass, so a tie always ends as unknown.
    wins = kept.max(axis=1) > 0.5 * total
    return np.where(wins & (total > 0), top, UNKNOWN)


def load_ferplus(
    root: str | Path,
    on_error: str = "raise",
    pixels_csv: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Turn a FERPlus folder into a record table of majority-labelled images.

    ``pixels_csv``: FER2013's ``fer2013.csv`` when it is not at ``<root>/fer2013.csv`` or
    ``<root>/fer2013/fer2013.csv``; only used when the image folders are absent. ``cache_dir``: where
    decoded images go. Dropped rows are counted in ``records.attrs["dropped"]``; bad rows (and an
    image name listed twice) raise :class:`UserError` naming the file and line, or are skipped and
    counted under ``on_error="skip"``.
    """
    root = Path(root)
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        raise UserError(f"{root}: not a FERPlus layout (missing {LABEL_FILE})")
    problems = Problems(on_error)
    table = read_csv_rows(label_file, problems, required=("Usage", "Image name", *VOTE_COLUMNS))
    votes, ok = _votes(table, label_file, problems)
    labels = majority_vote(votes)
    names = table["Image name"].to_numpy(dtype=object)
    usage = table["Usage"].to_numpy(dtype=object)
    # FER2013 numbers its images once over all three usages: a name listed twice is a repeat, even
    # under two usages (that would put one face in two splits).
    named = np.flatnonzero(ok & (names != ""))
    ok[named] = drop_repeats(
        names[named].tolist(),
        lambda k: {c: table[c].iloc[named[k]] for c in ("Usage", *VOTE_COLUMNS)},
        lambda k: (label_file, int(table["line"].iloc[named[k]])),
        problems,
        what=lambda name: f"image {name}",
    )
    no_name = ok & (names == "")
    use = ok & ~no_name & (labels < UNKNOWN)
    dropped = {
        "empty Image name (not a face)": int(no_name.sum()),
        "unknown (voted, or no majority)": int((ok & ~no_name & (labels == UNKNOWN)).sum()),
        "NF (not a face)": int((ok & ~no_name & (labels == NOT_FACE)).sum()),
    }
    folder_form = any((root / f).is_dir() for f in USAGE_FOLDER.values())
    if folder_form:
        image_root = root
    else:
        image_root = Path(cache_dir) if cache_dir is not None else root / DEFAULT_CACHE
        _decode_pixels(root, pixels_csv, table, use, image_root, label_file, problems)
    listing = FolderListing()
    paths = np.full(len(table), None, dtype=object)
    for i in np.flatnonzero(use):
        path = image_root / USAGE_FOLDER[usage[i]] / names[i]
        if not listing.exists(path):
            problems(f"{label_file}, line {table['line'].iloc[i]}: image {path} not found")
            use[i] = False
        else:
            paths[i] = str(path)
    if not use.any():
        raise UserError(f"{label_file}: no usable rows")
    records = make_records(
        {
            "dataset": "ferplus",
            "path": paths[use],
            "split": np.array([USAGE_SPLIT[u] for u in usage[use]], dtype=object),
            "expression": np.array([FERPLUS_CLASSES[k] for k in labels[use]], dtype=object),
        },
        int(use.sum()),
    )
    records.attrs.update(skipped=problems.skipped, dropped=dropped, classes=FERPLUS_CLASSES)
    return records


def _votes(table: pd.DataFrame, label_file: Path, problems: Problems) -> tuple[np.ndarray, np.ndarray]:
    """(N, 10) vote counts and a mask of rows whose Usage and votes are valid."""
    raw = table[list(VOTE_COLUMNS)].to_numpy(dtype=str).reshape(len(table), len(VOTE_COLUMNS))
    is_count = np.char.isdigit(raw)
    good_usage = table["Usage"].isin(list(USAGE_SPLIT)).to_numpy()
    ok = good_usage & is_count.all(axis=1)
    for i in np.flatnonzero(~ok):
        where = f"{label_file}, line {table['line'].iloc[i]}"
        if not good_usage[i]:
            usage = table["Usage"].iloc[i]
            problems(f"{where}: Usage {usage!r} is not one of {', '.join(USAGE_SPLIT)}")
        else:
            j = int(np.argmin(is_count[i]))
            problems(f"{where}: {VOTE_COLUMNS[j]} vote count {str(raw[i, j])!r} is not an integer >= 0")
    votes = np.where(is_count, raw, "0").astype(np.float64)
    return votes, ok


def _find_pixels_csv(root: Path, pixels_csv: str | Path | None) -> Path:
    if pixels_csv is not None:
        if not Path(pixels_csv).is_file():
            raise UserError(f"pixels_csv {pixels_csv} does not exist")
        return Path(pixels_csv)
    for candidate in (root / PIXELS_FILE, root / "fer2013" / PIXELS_FILE):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"{root}: no FERPlus images: expected folders {', '.join(USAGE_FOLDER.values())} "
        f"or FER2013's {PIXELS_FILE} (give its location with pixels_csv)"
    )


def _decode_pixels(
    root: Path,
    pixels_csv: str | Path | None,
    table: pd.DataFrame,
    use: np.ndarray,
    image_root: Path,
    label_file: Path,
    problems: Problems,
) -> None:
    """Write the 48x48 grey images of the used rows that are not in ``image_root`` yet."""
    targets = {
        i: image_root / USAGE_FOLDER[table["Usage"].iloc[i]] / table["Image name"].iloc[i]
        for i in np.flatnonzero(use)
    }
    listing = FolderListing()
    todo = {i: p for i, p in targets.items() if not listing.exists(p)}
    if not todo:
        return
    source = _find_pixels_csv(root, pixels_csv)
    pixels = read_csv_rows(source, Problems("raise"), required=("pixels", "Usage"))
    if len(pixels) != len(table):
        raise UserError(
            f"{source} has {len(pixels)} rows but {label_file} has {len(table)}: "
            "the two files must align row for row"
        )
    for folder in USAGE_FOLDER.values():
        try:
            (image_root / folder).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(
                f"cannot create the image cache {image_root / folder} ({err.strerror}); "
                "choose another cache_dir"
            ) from None
    for i, target in todo.items():
        where = f"{source}, line {pixels['line'].iloc[i]}"
        if pixels["Usage"].iloc[i] != table["Usage"].iloc[i]:
            problems(
                f"{where}: Usage {pixels['Usage'].iloc[i]!r} differs from {label_file}, line "
                f"{table['line'].iloc[i]} ({table['Usage'].iloc[i]!r}); the files do not align"
            )
            use[i] = False
            continue
        try:
            values = np.array(pixels["pixels"].iloc[i].split(), dtype=np.int64)
        except ValueError:
            values = np.array([], dtype=np.int64)
        if values.size != SIDE * SIDE or values.min() < 0 or values.max() > 255:
            problems(f"{where}: pixels must be {SIDE * SIDE} integers 0-255 separated by spaces")
            use[i] = False
            continue
        Image.fromarray(values.astype(np.uint8).reshape(SIDE, SIDE)).save(target)
