"""Subject-exclusive cross-validation protocols shipped with the project (datasets.md).

A protocol is a set of *parts* (disjoint subject lists) and a rule saying which part each fold tests;
the fold trains on the subjects of the other parts. The record table's ``fold`` column holds the part
number of each frame's subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import pandas as pd
import yaml

from clef.errors import UserError

SHIPPED_PROTOCOLS = ("bp4d", "disfa")


@dataclass(frozen=True)
class Protocol:
    """Disjoint subject parts and the part each fold tests."""

    name: str
    parts: dict[int, tuple[str, ...]]
    test_part_of_fold: dict[int, int]

    @property
    def folds(self) -> tuple[int, ...]:
        return tuple(sorted(self.test_part_of_fold))

    def part_of(self, subject: str) -> int | None:
        """The part holding ``subject``, or None when the protocol does not list it."""
        for part, subjects in self.parts.items():
            if subject in subjects:
                return part
        return None

    def subjects(self, fold: int) -> tuple[list[str], list[str]]:
        """(train subjects, test subjects) of ``fold``."""
        if fold not in self.test_part_of_fold:
            raise UserError(f"protocol {self.name!r} has folds {list(self.folds)}, not {fold}")
        test_part = self.test_part_of_fold[fold]
        train = [s for p, subs in sorted(self.parts.items()) if p != test_part for s in subs]
        return train, list(self.parts[test_part])


def load_protocol(name: str) -> Protocol:
    """Load a shipped protocol by name (``bp4d`` or ``disfa``)."""
    if name not in SHIPPED_PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; valid: {', '.join(SHIPPED_PROTOCOLS)}")
    text = resources.files("clef.resources.folds").joinpath(f"{name}.yaml").read_text()
    raw = yaml.safe_load(text)
    parts = {int(k): tuple(v) for k, v in raw["parts"].items()}
    all_subjects = [s for subs in parts.values() for s in subs]
    if len(all_subjects) != len(set(all_subjects)):
        raise UserError(f"protocol {name!r}: a subject appears in two parts")
    return Protocol(name, parts, {int(k): int(v) for k, v in raw["test_part_of_fold"].items()})


def split_fold(records: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a record table with a ``fold`` column (part numbers) into (train, test) for ``fold``.

    Uses the rule of the 3-fold protocols: fold k tests part 4 - k.
    """
    if "fold" not in records or records["fold"].isna().all():
        raise UserError("these records carry no fold (part) numbers")
    test_part = 4 - fold
    if fold not in (1, 2, 3):
        raise UserError(f"fold must be 1, 2 or 3, got {fold}")
    is_test = records["fold"] == test_part
    train, test = records[~is_test & records["fold"].notna()], records[is_test]
    assert_subject_exclusive(train, test)
    return train, test


def assert_subject_exclusive(train: pd.DataFrame, test: pd.DataFrame) -> None:
    """Raise if a subject appears in both selections (transductive leakage)."""
    shared = set(train["subject"].dropna()) & set(test["subject"].dropna())
    if shared:
        raise UserError(f"train and test share subjects: {', '.join(sorted(shared)[:10])}")
