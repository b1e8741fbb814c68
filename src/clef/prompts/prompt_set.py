"""Prompt sets: the method's texts as editable YAML files (docs/method.md §4, §6).

A prompt set file may hold these sections (all optional; ``base`` supplies what is absent)::

    base: labels.yaml            # a built-in set name or a path relative to this file
    activities: {T1: "...", ...} # activity descriptions (stage 1)
    au_names: {1: "...", ...}    # FACS names, keys are AU numbers
    au_descriptions: {1: "..."}  # appearance changes
    expression_names: {happiness: "..."}          # keys from clef.labels.EXPRESSIONS
    expression_descriptions: {happiness: "..."}
    name_templates: ["a photo of a person with {}.", ...]
    description_templates: [...]

Mappings from a file are merged key by key over its base; template lists replace the base's list.
Loading checks structure (known sections and labels, non-empty texts, each template with ``{}``
exactly once, every AU or expression with a name also has a description and vice versa, no key
given twice) and that texts tell labels apart: two labels of one section with the same text (after
merging with the base; compared ignoring case and runs of blanks) or a template listed twice are
errors naming the file, the line and both labels;
:meth:`PromptSet.require` checks that the labels a dataset uses are all covered. Errors are
:class:`clef.errors.UserError` naming the file and the line or label.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from clef.errors import UserError
from clef.labels import ALL_AUS, EXPRESSIONS
from clef.textfiles import StrictLoader, read_text, yaml_error

# Built-in prompt sets: name -> (file under clef/resources/prompts, one-line description).
PROMPT_SETS: dict[str, tuple[str, str]] = {
    "synth": ("synth.yaml", "the built-in synthetic world's 8 activities + label texts"),
    "bp4d": ("bp4d.yaml", "BP4D tasks T1-T8 + label texts"),
    "bp4dplus": ("bp4dplus.yaml", "BP4D+ tasks T1-T10 + label texts"),
    "labels": ("labels.yaml", "label texts only (AU and expression names, descriptions, templates)"),
}

_MAPPINGS = ("activities", "au_names", "au_descriptions", "expression_names", "expression_descriptions")
_LISTS = ("name_templates", "description_templates")
_SECTIONS = ("base", *_MAPPINGS, *_LISTS)


def builtin_prompt_dir() -> Path:
    """Folder of the built-in prompt files (inside the installed package)."""
    return Path(str(importlib.resources.files("clef") / "resources" / "prompts"))


@dataclass(frozen=True)
class PromptSet:
    """All texts of one prompt set. ``sources`` lists the files read (the set's file first)."""

    name: str
    sources: tuple[str, ...]
    activities: Mapping[str, str] = field(default_factory=dict)
    au_names: Mapping[int, str] = field(default_factory=dict)
    au_descriptions: Mapping[int, str] = field(default_factory=dict)
    expression_names: Mapping[str, str] = field(default_factory=dict)
    expression_descriptions: Mapping[str, str] = field(default_factory=dict)
    name_templates: tuple[str, ...] = ()
    description_templates: tuple[str, ...] = ()

    def require(
        self, aus: Iterable[int] = (), expressions: Iterable[str] = (), activities: Iterable[str] = ()
    ) -> None:
        """Check that every label a dataset uses has its texts.

        Raises:
            UserError: naming the prompt file and the first uncovered label.
        """
        where = self.sources[0]
        for au in aus:
            for section, texts in (("au_names", self.au_names), ("au_descriptions", self.au_descriptions)):
                if au not in texts:
                    raise UserError(f"{where}: AU{au} has no entry in {section} (prompt set {self.name!r})")
        for name in expressions:
            for section, texts in (
                ("expression_names", self.expression_names),
                ("expression_descriptions", self.expression_descriptions),
            ):
                if name not in texts:
                    raise UserError(
                        f"{where}: expression {name!r} has no entry in {section} (prompt set {self.name!r})"
                    )
        for activity in activities:
            if activity not in self.activities:
                known = ", ".join(self.activities) or "none"
                raise UserError(
                    f"{where}: activity {activity!r} has no description "
                    f"(prompt set {self.name!r} describes: {known})"
                )
        if (aus or expressions) and not (self.name_templates and self.description_templates):
            raise UserError(f"{where}: name_templates and description_templates must not be empty")

    # Texts in a caller's label order; each raises UserError on a missing label (via require).
    def au_name_texts(self, aus: Iterable[int]) -> list[str]:
        aus = list(aus)
        self.require(aus=aus)
        return [self.au_names[a] for a in aus]

    def au_description_texts(self, aus: Iterable[int]) -> list[str]:
        aus = list(aus)
        self.require(aus=aus)
        return [self.au_descriptions[a] for a in aus]

    def expression_name_texts(self, expressions: Iterable[str]) -> list[str]:
        expressions = list(expressions)
        self.require(expressions=expressions)
        return [self.expression_names[e] for e in expressions]

    def expression_description_texts(self, expressions: Iterable[str]) -> list[str]:
        expressions = list(expressions)
        self.require(expressions=expressions)
        return [self.expression_descriptions[e] for e in expressions]

    def activity_texts(self, activities: Iterable[str]) -> list[str]:
        activities = list(activities)
        self.require(activities=activities)
        return [self.activities[a] for a in activities]


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """Parse ``path`` -> (data, line numbers of (section,), (section, key) and (section, index))."""
    loader = StrictLoader(read_text(path))
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        raise yaml_error(path, err) from None
    finally:
        loader.dispose()
    if node is None:
        raise UserError(
            f"{path}: the prompt file is empty; expected a mapping of sections ({', '.join(_SECTIONS)})"
        )
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections ({', '.join(_SECTIONS)})")
    lines: dict[tuple[str, ...], int] = {}
    for key_node, value_node in node.value:
        section = str(key_node.value)
        lines[(section,)] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.SequenceNode):
            for i, item in enumerate(value_node.value):
                lines[(section, str(i))] = item.start_mark.line + 1
        elif isinstance(value_node, yaml.MappingNode):
            for k, _ in value_node.value:
                lines[(section, str(k.value))] = k.start_mark.line + 1
    return data, lines


def _check_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: expected a non-empty text, got {value!r}")
    return value.strip()


class _Place(NamedTuple):
    """Where a text is: a file and (when known) its line."""

    file: str
    line: int | None

    def __str__(self) -> str:
        return f"{self.file}, line {self.line}" if self.line else self.file

    def seen_from(self, other: _Place) -> str:
        """``line 3`` when ``other`` is in the same file, else the whole place."""
        return f"line {self.line}" if self.file == other.file and self.line else str(self)


def _parse_file(path: Path) -> tuple[dict[str, Any], str | None, dict[tuple[str, Any], _Place]]:
    """Validated sections of one file (without its base), its ``base`` entry, and where each text is
    (keyed by ``(section, label)`` or ``(section, index)``)."""
    data, lines = _read_yaml(path)

    def place(*key: Any) -> _Place:
        return _Place(str(path), lines.get(tuple(str(k) for k in key)))

    def at(*key: Any) -> str:
        return str(place(*key))

    places: dict[tuple[str, Any], _Place] = {}
    out: dict[str, Any] = {}
    for section, value in data.items():
        if section not in _SECTIONS:
            raise UserError(
                f"{at(section)}: unknown section {section!r}; valid sections: {', '.join(_SECTIONS)}"
            )
        if section == "base":
            continue
        if section in _LISTS:
            if not isinstance(value, list) or not value:
                raise UserError(f"{at(section)}: {section} must be a non-empty list of templates")
            templates = []
            for i, template in enumerate(value):
                template = _check_text(template, at(section, i))
                if template.count("{}") != 1:
                    raise UserError(
                        f"{at(section, i)}: template {template!r} must contain '{{}}' exactly once"
                    )
                templates.append(template)
                places[(section, i)] = place(section, i)
            out[section] = tuple(templates)
            continue
        if not isinstance(value, dict):
            raise UserError(f"{at(section)}: {section} must be a mapping of label -> text")
        texts: dict[Any, str] = {}
        for label, text in value.items():
            here = place(section, label)
            if section.startswith("au_"):
                number = _au_number(label)
                if number not in ALL_AUS:
                    raise UserError(
                        f"{at(section, label)}: unknown AU {label!r}; "
                        f"known AUs: {', '.join(map(str, ALL_AUS))}"
                    )
                label = number
            elif section.startswith("expression_") and label not in EXPRESSIONS:
                raise UserError(
                    f"{at(section, label)}: unknown expression {label!r}; valid: {', '.join(EXPRESSIONS)}"
                )
            elif section == "activities":
                label = str(label)
            if label in texts:  # e.g. both 12 and AU12
                raise UserError(
                    f"{here}: {_shown(section, label)} is given twice in {section} "
                    f"(first on {places[(section, label)].seen_from(here)})"
                )
            texts[label] = _check_text(text, str(here))
            places[(section, label)] = here
        out[section] = texts
    base = data.get("base")
    if base is not None and not isinstance(base, str):
        raise UserError(f"{at('base')}: base must be a prompt set name or a file path")
    return out, base, places


def _shown(section: str, label: Any) -> str:
    if section.startswith("au_"):
        return f"AU{label}"
    if section.startswith("expression_"):
        return f"expression {label!r}"
    if section == "activities":
        return f"activity {label!r}"
    return f"template {label + 1}"


def _au_number(label: Any) -> int | None:
    # Accept 12 and "AU12".
    if isinstance(label, int):
        return label
    text = str(label).upper().removeprefix("AU")
    return int(text) if text.isdigit() else None


def _resolve(reference: str, relative_to: Path | None) -> tuple[str, Path]:
    if reference in PROMPT_SETS:
        return reference, builtin_prompt_dir() / PROMPT_SETS[reference][0]
    path = Path(reference).expanduser()
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if path.is_file():
        return path.stem, path
    raise UserError(
        f"unknown prompt set {reference!r}: not a file; built-in prompt sets: {', '.join(PROMPT_SETS)}"
    )


def load_prompt_set(
    name_or_path: str | Path,
    aus: Iterable[int] = (),
    expressions: Iterable[str] = (),
    activities: Iterable[str] = (),
) -> PromptSet:
    """Load a built-in prompt set by name (see :data:`PROMPT_SETS`) or a YAML file by path, and
    check that the given labels (those a dataset uses) are covered (:meth:`PromptSet.require`).

    Raises:
        UserError: unknown name, unreadable file, or a validation error (file and line named).
    """
    name, path = _resolve(str(name_or_path), None)
    chain: list[tuple[Path, dict[str, Any], dict[tuple[str, Any], str]]] = []
    seen: set[Path] = set()
    while True:
        resolved = path.resolve()
        if resolved in seen:
            raise UserError(f"{path}: prompt files form a cycle through 'base'")
        seen.add(resolved)
        sections, base, places = _parse_file(path)
        chain.append((path, sections, places))
        if base is None:
            break
        _, path = _resolve(base, path.parent)
    merged: dict[str, Any] = {}
    where: dict[tuple[str, Any], _Place] = {}
    for _, sections, places in reversed(chain):  # base first, the named file last
        for section, value in sections.items():
            if section in _MAPPINGS:
                merged[section] = {**merged.get(section, {}), **value}
            else:  # a template list replaces the base's list, places and all
                merged[section] = value
                where = {k: v for k, v in where.items() if k[0] != section}
            where.update((k, v) for k, v in places.items() if k[0] == section)
    prompt_set = PromptSet(name=name, sources=tuple(str(p) for p, _, _ in chain), **merged)
    _check_pairs(prompt_set)
    _check_distinct(merged, where)
    prompt_set.require(aus=list(aus), expressions=list(expressions), activities=list(activities))
    return prompt_set


def _check_pairs(ps: PromptSet) -> None:
    # A label with a name but no description (or the reverse) is almost surely a typo in a key.
    where = ps.sources[0]
    for names, descriptions, what in (
        (ps.au_names, ps.au_descriptions, "AU"),
        (ps.expression_names, ps.expression_descriptions, "expression"),
    ):
        for label in sorted(set(names) ^ set(descriptions), key=str):
            has, missing = ("name", "description") if label in names else ("description", "name")
            shown = f"AU{label}" if what == "AU" else f"expression {label!r}"
            raise UserError(f"{where}: {shown} has a {has} but no {missing}")


def _check_distinct(sections: Mapping[str, Any], where: Mapping[tuple[str, Any], _Place]) -> None:
    """Raise when two labels of one section share a text, or a template list repeats a template.

    Two labels with one text cannot be told apart by a text-driven head; a repeated template
    silently weighs itself double in the template average.
    """
    for section, value in sections.items():
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        first: dict[str, Any] = {}
        for key, text in items:
            norm = " ".join(text.split()).casefold()
            if norm not in first:
                first[norm] = key
                continue
            other, here = first[norm], where[(section, key)]
            need = "each template must differ" if section in _LISTS else "each label needs its own text"
            raise UserError(
                f"{here}: {section}: {_shown(section, key)} has the same text as {_shown(section, other)} "
                f"({where[(section, other)].seen_from(here)}): {text!r}; {need}"
            )


def list_prompt_sets() -> list[tuple[str, str]]:
    """(name, description) of the built-in prompt sets."""
    return [(name, desc) for name, (_, desc) in PROMPT_SETS.items()]
