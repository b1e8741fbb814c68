"""What a researcher wants to see about a record table before training (``clef data check``).

Pure functions from a record table to small :class:`pandas.DataFrame` tables, plus the image check.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from clef.data.folds import Protocol
from clef.data.records import au_targets, record_aus
from clef.labels import au_column

SPLITS = ("train", "val", "test")


def counts_by(records: pd.DataFrame, column: str) -> pd.DataFrame | None:
    """Images, subjects and activities per value of ``column`` (None when the column is all NA)."""
    if column not in records or records[column].isna().all():
        return None
    keyed = records.assign(**{column: records[column].astype("string").fillna("<NA>")})
    groups = keyed.groupby(column, sort=True)
    table = pd.DataFrame({"images": groups.size()})
    for other, plural in (("subject", "subjects"), ("activity", "activities")):
        if other != column and records[other].notna().any():
            table[plural] = groups[other].nunique()
    return table


def fold_table(records: pd.DataFrame, protocol: Protocol | None) -> pd.DataFrame | None:
    """Train / test images and subjects of every fold of ``protocol`` (or of the 3-fold rule)."""
    if "fold" not in records or records["fold"].isna().all():
        return None
    rule = protocol.test_part_of_fold if protocol is not None else {1: 3, 2: 2, 3: 1}
    rows = []
    for fold, test_part in sorted(rule.items()):
        test = records[records["fold"] == test_part]
        train = records[(records["fold"] != test_part) & records["fold"].notna()]
        rows.append(
            {
                "fold": fold,
                "test part": test_part,
                "train images": len(train),
                "train subjects": train["subject"].nunique(),
                "test images": len(test),
                "test subjects": test["subject"].nunique(),
                "shared subjects": len(set(train["subject"].dropna()) & set(test["subject"].dropna())),
            }
        )
    return pd.DataFrame(rows).set_index("fold")


def subject_leaks(records: pd.DataFrame) -> list[str]:
    """Subjects that appear in two parts, or in both the train and the test split."""
    leaks = []
    with_subject = records[records["subject"].notna()]
    if with_subject["fold"].notna().any():
        parts = with_subject.dropna(subset=["fold"]).groupby("subject")["fold"].nunique()
        leaks += [f"subject {s} is in {n} parts" for s, n in parts[parts > 1].items()]
    if with_subject["split"].notna().any():
        train = set(with_subject.loc[with_subject["split"] == "train", "subject"])
        test = set(with_subject.loc[with_subject["split"] == "test", "subject"])
        leaks += [f"subject {s} is in both the train and the test split" for s in sorted(train & test)]
    return leaks


def au_table(records: pd.DataFrame) -> pd.DataFrame | None:
    """Per AU: coded and uncoded frames, positives, and base rate among coded frames."""
    aus = record_aus(records)
    if not aus:
        return None
    targets, mask = au_targets(records, aus)
    coded = mask.sum(axis=0)
    positives = (targets * mask).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(coded > 0, positives / np.maximum(coded, 1), np.nan)
    return pd.DataFrame(
        {
            "coded": coded,
            "uncoded": len(records) - coded,
            "present": positives.astype(np.int64),
            "base rate": np.round(rate, 4),
        },
        index=pd.Index([au_column(a) for a in aus], name="AU"),
    )


def expression_table(records: pd.DataFrame, classes: Iterable[str] | None = None) -> pd.DataFrame | None:
    """Images per expression (rows in the dataset's class order when given) and per split."""
    if records["expression"].isna().all():
        return None
    labelled = records[records["expression"].notna()]
    split = labelled["split"].astype("string").fillna("all")
    table = pd.crosstab(labelled["expression"].astype(str), split.astype(str))
    table.columns.name = None
    table = table[[c for c in ("train", "val", "test") if c in table] + [c for c in table if c not in SPLITS]]
    # Every class of the dataset gets a row, zero counts included, in the dataset's own order.
    order = list(classes or [])
    order += [c for c in sorted(table.index) if c not in order]
    table = table.reindex(order, fill_value=0)
    table.index.name = "expression"
    table["total"] = table.sum(axis=1)
    table["share"] = (table["total"] / table["total"].sum()).round(4)
    return table


def verify_images(paths: Iterable[str], decode: bool = False, progress: bool = True) -> list[tuple[str, str]]:
    """(path, reason) for every image Pillow cannot open and verify.

    ``Image.verify`` checks the file structure (PNG chunk CRCs, headers) without decoding. It passes a
    JPEG cut short, so JPEGs must also end with their end-of-image marker, which catches truncated
    copies cheaply; ``decode=True`` also decodes every image fully (much slower, catches the rest).
    """
    paths = list(paths)
    bad = []
    for path in tqdm(paths, desc="verifying images", unit="img", disable=not progress, leave=False):
        try:
            with Image.open(path) as image:
                image_format = image.format
                image.verify()
            if image_format == "JPEG" and not _ends_with_jpeg_eoi(path):
                bad.append((path, "JPEG end-of-image marker missing (file cut short?)"))
                continue
            if decode:
                with Image.open(path) as image:
                    image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            bad.append((path, f"{type(err).__name__}: {err}"))
    return bad


def _ends_with_jpeg_eoi(path: str, tail: int = 1024) -> bool:
    # Some encoders pad after the EOI marker (FF D9), so look for it near the end, not at the last byte.
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - tail))
        return b"\xff\xd9" in handle.read()
