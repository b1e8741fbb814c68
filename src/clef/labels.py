"""Canonical label vocabularies: FACS action units and expression names.

Datasets store labels in their own orders (RAF-DB is 1-based with surprise first, FERPlus and
AffectNet start with neutral); every loader maps them to the canonical *names* here, and every output
file and checkpoint carries those names. Never compare class indices across datasets.
"""

from __future__ import annotations

# FACS action units the project knows (number -> FACS name).
AU_NAMES: dict[int, str] = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    5: "upper lid raiser",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    12: "lip corner puller",
    14: "dimpler",
    15: "lip corner depressor",
    17: "chin raiser",
    20: "lip stretcher",
    23: "lip tightener",
    24: "lip pressor",
    25: "lips part",
    26: "jaw drop",
}
ALL_AUS: tuple[int, ...] = tuple(AU_NAMES)

# Benchmark subsets (docs/datasets.md).
BP4D_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
DISFA_CODED_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
DISFA_AUS: tuple[int, ...] = (1, 2, 4, 6, 9, 12, 25, 26)

# Canonical expression names: the 8 FER classes (FERPlus / AffectNet-8 order).
EXPRESSIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)
# RAF-DB basic labels 1..7 in the file's order.
RAFDB_CLASSES: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


def au_column(au: int) -> str:
    """Name of the occurrence column of ``au`` in a record table (``AU12``)."""
    return f"AU{au}"


def au_intensity_column(au: int) -> str:
    """Name of the intensity column of ``au`` in a record table (``AU12_intensity``)."""
    return f"AU{au}_intensity"
