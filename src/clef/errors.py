"""The one exception type that means "the user asked for something that cannot be done".

The command line prints it as a single line (``clef: error: ...``) and exits with status 2; anything
else that escapes is a bug and keeps its traceback (:mod:`clef.cli`).

Every message has the same shape, built here::

    <file>, line <n>: <what is wrong>; expected <what would be right>; valid: <a>, <b>, ...

where each part but the middle one is present only when it is known. Messages are always one line:
text from elsewhere (a YAML parser, torch) that spans several lines is joined into one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from os import PathLike

_NEWLINES = re.compile(r"\s*\n\s*")
# torch's DataLoader re-raises an exception of a worker process as ``type(err)(text)`` where the text
# is "Caught UserError in DataLoader worker process 0.\nOriginal Traceback ...\n...UserError: <msg>".
_WORKER_WRAPPED = re.compile(r"^Caught \w*UserError .*\nOriginal Traceback", re.DOTALL)


def one_line(text: str) -> str:
    """``text`` with every line break (and the blanks around it) replaced by one space."""
    return _NEWLINES.sub(" ", str(text).strip())


def format_problem(
    message: str,
    file: str | PathLike | None = None,
    line: int | None = None,
    expected: str | None = None,
    choices: Iterable[object] | None = None,
) -> str:
    """The one-line text of a problem (see the module docstring for its shape)."""
    text = str(message)
    if expected is not None:
        text += f"; expected {expected}"
    if choices is not None:
        text += f"; valid: {', '.join(str(c) for c in choices)}"
    if file is not None:
        where = f"{file}, line {line}" if line is not None else str(file)
        text = f"{where}: {text}"
    return one_line(text)


class UserError(Exception):
    """Bad input from the user: a wrong argument, a malformed file, a missing path.

    ``UserError(message)`` takes a finished message; the keyword arguments build one in the shared
    shape instead: ``UserError("label '9' is out of range", file=path, line=12, expected="1-7")``
    gives ``"<path>, line 12: label '9' is out of range; expected 1-7"``. ``str(err)`` is always
    one line. The parts stay available as attributes (``reason``, ``file``, ``line``, ``expected``,
    ``choices``), None where not given.

    An error raised in a DataLoader worker process arrives in the main process wrapped in the
    worker's traceback text; it is unwrapped to the original one-line message.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike | None = None,
        line: int | None = None,
        expected: str | None = None,
        choices: Iterable[object] | None = None,
    ) -> None:
        message = _unwrap_worker_text(str(message))
        self.reason = message
        self.file = None if file is None else str(file)
        self.line = line
        self.expected = expected
        self.choices = None if choices is None else tuple(choices)
        super().__init__(format_problem(message, self.file, line, expected, self.choices))


def _unwrap_worker_text(text: str) -> str:
    if not _WORKER_WRAPPED.match(text):
        return text
    # The traceback's last line is "clef.errors.UserError: <the original one-line message>".
    last = text.rstrip().rsplit("\n", 1)[-1]
    _, sep, original = last.partition("UserError: ")
    return original if sep else text
