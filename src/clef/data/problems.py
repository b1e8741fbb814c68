"""How loaders treat bad input: raise at once (default) or skip it, counted and reported."""

from __future__ import annotations

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
