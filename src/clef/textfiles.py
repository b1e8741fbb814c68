"""Reading the text files users hand to clef, with one-line errors that name the file and line.

Label lists, CSV tables, YAML configs and prompt sets, fold files and checkpoint sidecars all come
through here (or, for streamed CSVs, through :func:`not_utf8` when decoding fails), so that every
reader reports the same problems the same way:

* a missing file, a folder where a file was expected, a file that cannot be read;
* bytes that are not UTF-8: ``<file>, line 3: not UTF-8 text (byte 0xe9, column 7); save it as UTF-8``;
* YAML that does not parse, with the line of the problem, and a key given twice in one mapping
  (PyYAML keeps the last one silently, which turns a typo into a different run);
* JSON that does not parse, with its line.

A UTF-8 byte-order mark at the start of a file is accepted and dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from clef.errors import UserError

ENCODING = "utf-8-sig"  # UTF-8; a leading byte-order mark (as some editors write) is dropped


def read_text(path: str | Path) -> str:
    """The whole of ``path`` as text.

    Raises:
        UserError: the file is missing, is a folder, cannot be read, or is not UTF-8 (naming the line
            and column of the first bad byte).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError("no such file", file=path) from None
    except IsADirectoryError:
        raise UserError("is a folder, not a file", file=path) from None
    except OSError as err:
        raise UserError(f"cannot read ({err.strerror})", file=path) from None
    try:
        return data.decode(ENCODING)
    except UnicodeDecodeError as err:
        raise _not_utf8(path, data, err) from None


def not_utf8(path: str | Path) -> UserError:
    """The error for a file that failed to decode as UTF-8 while being streamed.

    Re-reads the file's bytes to find the line and column of the first byte that is not UTF-8.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        data.decode(ENCODING)
    except UnicodeDecodeError as err:
        return _not_utf8(path, data, err)
    except OSError:
        pass
    return UserError("not UTF-8 text; save it as UTF-8", file=path)


def _not_utf8(path: Path, data: bytes, err: UnicodeDecodeError) -> UserError:
    # Offsets of a utf-8-sig error may leave out the byte-order mark; plain UTF-8 gives file offsets.
    try:
        data.decode("utf-8")
        start = err.start
    except UnicodeDecodeError as plain:
        start = plain.start
    line_start = data.rfind(b"\n", 0, start) + 1
    line = data.count(b"\n", 0, start) + 1
    column = start - line_start + 1
    return UserError(
        f"not UTF-8 text (byte 0x{data[start]:02x}, column {column}); save it as UTF-8", file=path, line=line
    )


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one YAML mapping."""


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error.

    (YAML forbids repeated keys; PyYAML keeps the last value without a word.) Keys brought in by a
    merge (``<<: *anchor``) may still be overridden, as YAML intends.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if repeated:
                    raise DuplicateKeyError(
                        None,
                        None,
                        f"key {key!r} is given twice (first on line {seen[key]})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def yaml_error(path: str | Path, err: yaml.YAMLError) -> UserError:
    """The one-line error for a YAML problem in ``path`` (the line comes from the parser's mark)."""
    mark = getattr(err, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(err, "problem", None) or str(err)
    if isinstance(err, DuplicateKeyError):
        return UserError(problem, file=path, line=line)
    context = getattr(err, "context", None)
    return UserError(
        f"not valid YAML: {problem}" + (f" ({context})" if context else ""), file=path, line=line
    )


def parse_yaml(text: str, source: str | Path) -> Any:
    """Parse YAML ``text`` (read from ``source``, named in errors) with :class:`StrictLoader`."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader: no arbitrary objects
    except yaml.YAMLError as err:
        raise yaml_error(source, err) from None


def load_yaml(path: str | Path) -> Any:
    """The YAML document in ``path`` (None when the file is empty); errors as :func:`read_text`,
    :func:`yaml_error`."""
    return parse_yaml(read_text(path), path)


def load_json(path: str | Path) -> Any:
    """The JSON document in ``path``; a syntax error names its line."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"not valid JSON ({err.msg}, column {err.colno})", file=path, line=err.lineno
        ) from None
