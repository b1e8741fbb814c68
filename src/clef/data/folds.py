"""Subject-exclusive cross-validation protocols (docs/datasets.md).

A protocol is a set of *parts* (disjoint subject lists) and a rule saying which part each fold tests;
the fold trains on the subjects of the other parts. The record table's ``fold`` column holds the part
number of each frame's subject.

BP4D and DISFA protocols ship with the project (``clef/resources/folds``). Datasets without official
folds (BP4D+) take a user fold file (:func:`load_protocol_file`, YAML in the shipped format or a CSV
``subject,part``) or generate subject-exclusive parts from a seed (:func:`generate_protocol`), which
:func:`save_protocol` writes next to the results so that a run can be repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from clef.data.problems import Problems
from clef.data.reading import read_csv_rows
from clef.errors import UserError
from clef.textfiles import load_yaml

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
    return _protocol_from_yaml(name, yaml.safe_load(text), where=f"shipped protocol {name!r}")


def load_protocol_file(path: str | Path) -> Protocol:
    """Load a user fold file.

    ``.yaml`` / ``.yml``: the shipped format, ``parts: {1: [subjects], 2: [...], ...}`` and optionally
    ``test_part_of_fold: {fold: part}`` (default: fold k tests part n + 1 - k for n parts, the rule of
    the shipped lists). ``.csv``: a header ``subject,part`` then one subject per line.
    Raises :class:`UserError` naming the file (and line) for a malformed file or a subject in two parts.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"fold file {path} does not exist")
    if path.suffix.lower() in (".yaml", ".yml"):
        return _protocol_from_yaml(path.stem, load_yaml(path), where=str(path))
    if path.suffix.lower() == ".csv":
        table = read_csv_rows(path, Problems("raise"), required=("subject", "part"))
        parts: dict[int, list[str]] = {}
        seen: dict[str, int] = {}
        for subject, part, line in zip(table["subject"], table["part"], table["line"], strict=True):
            if not part.isdigit() or int(part) < 1:
                raise UserError(f"{path}, line {line}: part {part!r} is not a positive integer")
            if subject in seen:
                raise UserError(
                    f"{path}, line {line}: subject {subject!r} already listed on line {seen[subject]}"
                )
            seen[subject] = line
            parts.setdefault(int(part), []).append(subject)
        return _make_protocol(path.stem, {k: tuple(v) for k, v in parts.items()}, None, str(path))
    raise UserError(f"fold file {path}: expected a .yaml, .yml or .csv file")


def _protocol_from_yaml(name: str, raw: object, where: str) -> Protocol:
    if not isinstance(raw, dict) or not isinstance(raw.get("parts"), dict):
        raise UserError(f"{where}: expected a mapping with 'parts: {{1: [subjects], ...}}'")
    unknown = set(raw) - {"parts", "test_part_of_fold"}
    if unknown:
        raise UserError(f"{where}: unknown keys {sorted(unknown)}; valid: parts, test_part_of_fold")
    try:
        parts = {int(k): tuple(str(s) for s in v) for k, v in raw["parts"].items()}
        rule = raw.get("test_part_of_fold")
        rule = None if rule is None else {int(k): int(v) for k, v in rule.items()}
    except (TypeError, ValueError, AttributeError):
        raise UserError(f"{where}: parts and folds must be numbered 1, 2, ... with subject lists") from None
    return _make_protocol(name, parts, rule, where)


def _make_protocol(
    name: str, parts: dict[int, tuple[str, ...]], rule: dict[int, int] | None, where: str
) -> Protocol:
    if len(parts) < 2:
        raise UserError(f"{where}: a protocol needs at least 2 parts, found {len(parts)}")
    seen: dict[str, int] = {}
    for part, subjects in sorted(parts.items()):
        for subject in subjects:
            if subject in seen:
                raise UserError(f"{where}: subject {subject!r} is in parts {seen[subject]} and {part}")
            seen[subject] = part
    n = len(parts)
    rule = rule if rule is not None else {k: n + 1 - k for k in range(1, n + 1)}
    bad = [p for p in rule.values() if p not in parts]
    if bad:
        raise UserError(f"{where}: test_part_of_fold names parts {bad} that do not exist")
    return Protocol(name, dict(sorted(parts.items())), rule)


def generate_protocol(subjects, n_parts: int = 3, seed: int = 0, name: str = "generated") -> Protocol:
    """Deal ``subjects`` into ``n_parts`` subject-exclusive parts, deterministically given ``seed``.

    The subjects are sorted (so the order they were found in does not matter), shuffled with
    ``numpy.random.default_rng(seed)`` and dealt round-robin, so part sizes differ by at most one.
    Subjects whose ids start with the same letter (BP4D+'s F/M) are dealt as one run each, which
    keeps the sexes balanced across parts. Fold k tests part n_parts + 1 - k.
    """
    unique = sorted({str(s) for s in subjects})
    if n_parts < 2:
        raise UserError(f"n_parts must be at least 2, got {n_parts}")
    if len(unique) < n_parts:
        raise UserError(f"cannot deal {len(unique)} subjects into {n_parts} subject-exclusive parts")
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for subject in unique:
        groups.setdefault(subject[:1], []).append(subject)
    dealt: list[str] = []
    for key in sorted(groups):
        group = groups[key]
        dealt.extend(group[i] for i in rng.permutation(len(group)))
    parts = {k + 1: tuple(sorted(dealt[k::n_parts])) for k in range(n_parts)}
    return _make_protocol(name, parts, None, where=name)


def save_protocol(protocol: Protocol, path: str | Path) -> Path:
    """Write ``protocol`` as YAML in the shipped format (re-loadable by :func:`load_protocol_file`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "parts": {k: list(v) for k, v in protocol.parts.items()},
        "test_part_of_fold": dict(protocol.test_part_of_fold),
    }
    header = f"# Subject-exclusive protocol {protocol.name!r}: fold k tests part test_part_of_fold[k].\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=True, default_flow_style=None))
    return path


def split_fold(
    records: pd.DataFrame, fold: int, protocol: Protocol | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a record table with a ``fold`` column (part numbers) into (train, test) for ``fold``.

    ``protocol`` gives the part each fold tests; without it, the rule of the shipped 3-fold
    protocols: fold k tests part 4 - k. Records with no part (NA) are in neither selection.
    """
    if "fold" not in records or records["fold"].isna().all():
        raise UserError("these records carry no fold (part) numbers")
    rule = protocol.test_part_of_fold if protocol is not None else {1: 3, 2: 2, 3: 1}
    if fold not in rule:
        raise UserError(f"fold must be one of {sorted(rule)}, got {fold}")
    test_part = rule[fold]
    is_test = records["fold"] == test_part
    train, test = records[~is_test & records["fold"].notna()], records[is_test]
    assert_subject_exclusive(train, test)
    return train, test


def assert_subject_exclusive(train: pd.DataFrame, test: pd.DataFrame) -> None:
    """Raise if a subject appears in both selections (transductive leakage)."""
    shared = set(train["subject"].dropna()) & set(test["subject"].dropna())
    if shared:
        raise UserError(f"train and test share subjects: {', '.join(sorted(shared)[:10])}")


def test_selection(
    records: pd.DataFrame, fold: int | None = None, split: str | None = None
) -> tuple[pd.DataFrame, str]:
    """The records a scoring command uses and how to say which: fold ``fold``'s test subjects, or the
    official split ``split`` (default ``test`` when no fold is given).

    Raises:
        UserError: both are given; the records have no official split; nothing is selected.
    """
    if fold is not None and split is not None:
        raise UserError("give a fold or a split, not both")
    if fold is not None:
        _, selected = split_fold(records, fold, records.attrs.get("protocol"))
        where = f"fold {fold} test subjects"
    else:
        split = split or "test"
        if "split" not in records or records["split"].isna().all():
            raise UserError("the dataset has no official split; use a fold")
        selected = records[records["split"] == split]
        where = f"split {split!r}"
    if selected.empty:
        raise UserError(f"no records in {where}")
    return selected, where
