"""Run configuration: frozen dataclasses with defaults, YAML files of overrides, ``key=value`` overrides.

A stage program declares its configuration as a (nested) frozen dataclass whose defaults are a
working run. A YAML file holds only the values that differ; ``a.b=value`` arguments on the command line
override both. Every key is checked against the dataclass: an unknown key is a :class:`UserError`
that names the key, where it came from and the valid keys, because a misspelt key silently ignored is
a run that trained something else. The merged result is saved next to every run (:func:`save_config`)
so that the run can be rebuilt from its folder.

Values are coerced to the declared field types: ``int``, ``float``, ``bool``, ``str``, ``Path``,
``Optional[...]``, ``Literal[...]``, ``tuple[...]``/``list[...]`` and nested dataclasses. Ranges are
checked by the dataclasses themselves (``__post_init__``, with :func:`require_number`); the loader
turns their errors into a :class:`UserError` naming the source and the full key.

Resuming a run compares its stored config with the new one (:func:`config_changes`); a dataclass
lists the fields that may change on resume (they do not change what is learned: progress bars,
decode workers, the output folder) in a class attribute ``RESUME_MAY_DIFFER``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from clef.errors import UserError
from clef.run_folder import atomic_write
from clef.textfiles import DuplicateKeyError, StrictLoader, load_yaml

C = TypeVar("C")

__all__ = [
    "load_config",
    "save_config",
    "config_to_dict",
    "config_from_dict",
    "config_changes",
    "require_number",
    "InvalidValue",
]


class InvalidValue(ValueError):
    """A config value outside its valid range (raised by a dataclass's ``__post_init__``).

    ``key`` is the field name; :func:`load_config` prefixes the path of the nested dataclass.
    """

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key} {detail}")
        self.key, self.detail = key, detail


def require_number(
    key: str,
    value: Any,
    *,
    integer: bool = False,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
) -> None:
    """Check that ``value`` is a finite number (an integer with ``integer``) within the given bounds.

    For ``__post_init__`` checks of config dataclasses, e.g.
    ``require_number("lr", self.lr, at_least=0)`` or ``require_number("steps", self.steps, integer=True,
    at_least=1)``.

    Raises:
        InvalidValue: naming ``key``, the requirement and the value (NaN and inf always fail).
    """
    bounds = [
        f"{op} {bound:g}"
        for op, bound in ((">=", at_least), (">", above), ("<=", at_most), ("<", below))
        if bound is not None
    ]
    kind = "an integer" if integer else "a finite number"
    detail = f"must be {kind}{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise InvalidValue(key, detail)
    v = float(value)
    if (
        not math.isfinite(v)
        or (at_least is not None and v < at_least)
        or (above is not None and v <= above)
        or (at_most is not None and v > at_most)
        or (below is not None and v >= below)
    ):
        raise InvalidValue(key, detail)


def _field_types(cls: type) -> dict[str, Any]:
    # get_type_hints resolves the string annotations that `from __future__ import annotations` leaves.
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _valid_keys(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Convert ``value`` (parsed YAML) to the type ``tp``; raise UserError naming ``key`` and ``source``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> UserError:
        return UserError(f"{source}: key '{key}' expects {expected}, got {value!r}")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise fail(f"a mapping of {tp.__name__} fields ({_valid_keys(tp)})")
        return config_from_dict(tp, value, source=source, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except UserError as err:
                errors.append(str(err))
        raise fail(" or ".join(str(a) for a in args))
    if origin is typing.Literal:
        if value not in args:
            raise UserError(
                f"{source}: key '{key}' must be one of {', '.join(repr(a) for a in args)}, got {value!r}"
            )
        return value
    if origin in (tuple, list, Sequence):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise fail("a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise fail(f"a list of {len(args)} values")
            items = [_coerce(v, a, key, source) for v, a in zip(value, args, strict=True)]
        else:
            item_type = args[0] if args else Any
            items = [_coerce(v, item_type, key, source) for v in value]
        return list(items) if origin is list else tuple(items)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, key, source): _coerce(v, vt, key, source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept any float literal.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise fail("a number")
        return float(value)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail("a string")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise fail("a path")
    raise TypeError(f"config field '{key}' has an unsupported type {tp!r}")


def config_from_dict(cls: type[C], data: Mapping[str, Any], source: str = "<dict>", prefix: str = "") -> C:
    """Build ``cls`` from its defaults overridden by ``data`` (nested mappings for nested dataclasses).

    Raises:
        UserError: a key of ``data`` is not a field of ``cls`` (the message names the key, ``source``
            and the valid keys) or a value does not fit the field's type.
    """
    return _merge(cls(), data, source, prefix)


def _merge(base: Any, data: Mapping[str, Any], source: str, prefix: str) -> Any:
    """Return ``base`` (a dataclass instance) with the keys of ``data`` replaced, recursively."""
    cls = type(base)
    types_ = _field_types(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in types_:
            where = f" under '{prefix[:-1]}'" if prefix else ""
            raise UserError(
                f"{source}: unknown key '{prefix}{key}'; valid keys{where} are: {_valid_keys(cls)}"
            )
        tp = types_[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            values[key] = _merge(getattr(base, key), value, source, f"{prefix}{key}.")
        else:
            values[key] = _coerce(value, tp, f"{prefix}{key}", source)
    try:
        return dataclasses.replace(base, **values)
    except InvalidValue as err:  # a range check of the dataclass: name the full key
        raise UserError(f"{source}: key '{prefix}{err.key}' {err.detail}") from None
    except (ValueError, TypeError) as err:  # another __post_init__ check of the dataclass
        raise UserError(f"{source}: {err}") from None


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"override '{text}' is not of the form key=value (e.g. optim.lr=1e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"override '{text}' has an empty key")
    # YAML parses the value so that lists ([1, 2]), null, true/false and numbers work on the command line.
    try:
        value = yaml.load(raw, Loader=StrictLoader) if raw.strip() else ""
    except DuplicateKeyError as err:
        raise UserError(f"override '{text}': {err.problem}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def load_config(cls: type[C], yaml_path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Defaults of ``cls``, then the YAML file's values, then each ``a.b=value`` override in order.

    Args:
        cls: a frozen dataclass whose fields all have defaults.
        yaml_path: a YAML mapping holding only the keys that differ from the defaults, or None.
        overrides: strings ``dotted.key=value``; the value is read as YAML and coerced to the field type.

    Raises:
        UserError: missing or malformed file, an unknown key (names the key, the file and the valid
            keys), or a value of the wrong type.
    """
    cfg = cls()
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        data = load_yaml(path) or {}
        if not isinstance(data, Mapping):
            raise UserError(f"{path}: the top level must be a mapping of keys to values")
        cfg = _merge(cfg, data, str(path), "")
    for text in overrides:
        parts, value = _parse_override(text)
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        cfg = _merge(cfg, {parts[0]: nested}, f"override '{text}'", "")
    return cfg


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-safe Python (dicts, lists, str, numbers, bool, None)."""
    return _plain(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the merged config as YAML; ``load_config(type(cfg), path)`` rebuilds an equal config.

    The file is replaced atomically (:func:`clef.run_folder.atomic_write`): a kill leaves the old or
    the new config, never half of one.
    """
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def config_changes(stored: Any, cfg: Any, prefix: str = "") -> list[str]:
    """What differs between a stored config (plain dicts, as :func:`config_to_dict` or a saved YAML
    gives) and the config dataclass ``cfg``, as lines ``"train.steps: 100 -> 200"``.

    Fields named in a dataclass's ``RESUME_MAY_DIFFER`` class attribute are not compared; keys present
    on one side only appear as ``(absent)``. An empty list means "the same run".
    """
    if dataclasses.is_dataclass(cfg) and isinstance(stored, Mapping):
        free = getattr(type(cfg), "RESUME_MAY_DIFFER", frozenset())
        names = [f.name for f in dataclasses.fields(cfg)]
        changes = []
        for name in names:
            if name in free:
                continue
            if name not in stored:
                changes.append(f"{prefix}{name}: (absent) -> {_show(_plain(getattr(cfg, name)))}")
            else:
                changes += config_changes(stored[name], getattr(cfg, name), f"{prefix}{name}.")
        changes += [f"{prefix}{k}: {_show(v)} -> (absent)" for k, v in stored.items() if k not in names]
        return changes
    new = _plain(cfg)
    return [] if stored == new else [f"{prefix[:-1]}: {_show(stored)} -> {_show(new)}"]


def _show(value: Any) -> str:
    return value if isinstance(value, str) and value else json.dumps(value)
