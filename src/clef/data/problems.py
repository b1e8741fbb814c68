"""How loaders treat bad input: raise at once (default) or skip it, counted and reported.

Repeated rows (:func:`drop_repeats`) follow the same policy: an error by default; under ``skip``
an identical repeat is dropped (its first row is kept) and a key whose rows disagree loses all of
them, since there is no telling which is right. Each dropped row is one entry of ``skipped``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

from clef.errors import UserError

ON_ERROR_CHOICES = ("raise", "skip")


class Problems:
    """Collects problems found while loading under an ``on_error`` policy.

    ``raise``: the first problem raises :class:`UserError` with its message (which names the file and
    line). ``skip``: problems are recorded in :attr:`skipped` and the offending item is dropped; the
    caller reports the count at the end. Nothing is ever silently turned into a label.
    """

    def __init__(self, on_error: str = "raise"):
        if on_error not in ON_ERROR_CHOICES:
            raise UserError(f"unknown on_error {on_error!r}; valid: {', '.join(ON_ERROR_CHOICES)}")
        self.on_error = on_error
        self.skipped: list[str] = []

    def __call__(self, message: str) -> None:
        if self.on_error == "raise":
            raise UserError(message)
        self.skipped.append(message)


def drop_repeats(
    keys: Sequence[Hashable],
    cells: Callable[[int], Mapping[str, str]],
    place: Callable[[int], tuple[str | Path, int]],
    problems: Problems,
    what: Callable[[Hashable], str],
) -> np.ndarray:
    """Find rows that repeat the key of another row; return the mask of rows to keep.

    Args:
        keys: one key per row (e.g. the frame number, the image path).
        cells: row index -> the row's cells that carry its labels, compared as strings (only called
            for rows whose key repeats, so that a large table costs one pass over ``keys``).
        place: row index -> ``(file, line)`` of the row, for the messages.
        problems: receives one message per row dropped (under ``raise`` the first one raises).
        what: names a key in a message, e.g. ``lambda k: f"frame {k}"``.

    A key whose rows are identical keeps its first row; each later one is a problem (``repeats
    line 3``). A key whose rows disagree cannot be resolved: every one of its rows is a problem
    (``also on line 3 with other labels``) and none is kept.
    """
    keep = np.ones(len(keys), dtype=bool)
    rows_of: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        rows_of.setdefault(key, []).append(i)
    for key, rows in rows_of.items():
        if len(rows) == 1:
            continue
        first, label = rows[0], {i: cells(i) for i in rows}
        conflict = any(label[i] != label[first] for i in rows[1:])
        for i in rows[1:]:
            keep[i] = False
            if label[i] == label[first]:
                problems(f"{_at(place(i))}: {what(key)} repeats {_other(place(first), place(i))}")
            else:
                problems(
                    f"{_at(place(i))}: {what(key)} is also on {_other(place(first), place(i))} with other "
                    f"labels ({_difference(label[first], label[i])})"
                )
        if conflict:
            keep[first] = False
            second = next(i for i in rows[1:] if label[i] != label[first])
            problems(
                f"{_at(place(first))}: {what(key)} is also on {_other(place(second), place(first))} with "
                f"other labels ({_difference(label[second], label[first])})"
            )
    return keep


def _at(place: tuple[str | Path, int]) -> str:
    return f"{place[0]}, line {place[1]}"


def _other(place: tuple[str | Path, int], seen_from: tuple[str | Path, int]) -> str:
    """``line 3`` for a line of the same file, ``<file>, line 3`` for another file's."""
    return f"line {place[1]}" if str(place[0]) == str(seen_from[0]) else _at(place)


def _difference(a: Mapping[str, str], b: Mapping[str, str], shown: int = 3) -> str:
    """``"AU4 '1' there, '0' here"`` for the first ``shown`` cells that differ."""
    names = [n for n in dict.fromkeys([*a, *b]) if a.get(n) != b.get(n)]
    parts = [f"{n} {a.get(n)!r} there, {b.get(n)!r} here" for n in names[:shown]]
    return "; ".join(parts) + (f"; {len(names) - shown} more" if len(names) > shown else "")
