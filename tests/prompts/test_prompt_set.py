"""Prompt sets load, cover the project's labels, and reject broken files with file + line/label."""

from __future__ import annotations

import pytest

from clef.errors import UserError
from clef.labels import ALL_AUS, AU_NAMES, EXPRESSIONS
from clef.prompts import PROMPT_SETS, load_prompt_set

ACTIVITIES = {"bp4d": 8, "bp4dplus": 10, "synth": 8}


@pytest.mark.parametrize("name", list(ACTIVITIES))
def test_builtin_sets_cover_every_label_and_their_activities(name):
    ps = load_prompt_set(name, aus=ALL_AUS, expressions=EXPRESSIONS)
    ids = [f"T{i}" for i in range(1, ACTIVITIES[name] + 1)]
    assert list(ps.activities) == ids
    for text in ps.activity_texts(ids):
        what, emotion = text.split(" The target emotion is ")
        assert what.endswith(".") and emotion.endswith(".") and len(what) > 20
    assert dict(ps.au_names) == AU_NAMES  # FACS names as in clef.labels
    assert len(set(ps.au_descriptions.values())) == len(ALL_AUS)
    assert len(set(ps.expression_descriptions.values())) == len(EXPRESSIONS)
    assert ps.name_templates[0] == "a photo of a person with {}." and len(ps.description_templates) >= 3
    assert "labels" in PROMPT_SETS


def _write(tmp_path, text: str, name: str = "mine.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_template_without_placeholder_names_file_and_line(tmp_path):
    path = _write(
        tmp_path, "base: labels\nname_templates:\n  - 'a photo of a person with {}.'\n  - a photo of a face\n"
    )
    with pytest.raises(UserError) as err:
        load_prompt_set(path)
    assert f"{path}, line 4" in str(err.value) and "a photo of a face" in str(err.value)


def test_missing_label_description_names_the_label(tmp_path):
    path = _write(
        tmp_path,
        "au_names:\n  1: inner brow raiser\n  2: outer brow raiser\nau_descriptions:\n  1: brows up\n",
    )
    with pytest.raises(UserError, match=r"mine.yaml: AU2 has a name but no description"):
        load_prompt_set(path)


def test_labels_a_dataset_uses_must_be_covered(tmp_path):
    path = _write(
        tmp_path, "base: synth\nactivities:\n  T9: The character sings. The target emotion is joy.\n"
    )
    ps = load_prompt_set(path)
    assert ps.activities["T9"].startswith("The character sings") and ps.activities["T1"]  # merged over base
    with pytest.raises(UserError, match=r"activity 'T11' has no description"):
        load_prompt_set(path, activities=["T1", "T11"])
    only_names = _write(
        tmp_path,
        "expression_names:\n  happiness: joy\nexpression_descriptions:\n  happiness: a smile\n",
        "e.yaml",
    )
    with pytest.raises(UserError, match=r"e.yaml: expression 'sadness' has no entry in expression_names"):
        load_prompt_set(only_names, expressions=["happiness", "sadness"])


def test_unknown_sections_labels_and_names_are_rejected(tmp_path):
    with pytest.raises(UserError, match=r"line 2: unknown section 'templates'; valid sections"):
        load_prompt_set(_write(tmp_path, "base: labels\ntemplates: []\n"))
    with pytest.raises(UserError, match=r"line 2: unknown AU 3"):
        load_prompt_set(_write(tmp_path, "au_names:\n  3: nothing\n"))
    with pytest.raises(UserError, match=r"line 2: unknown expression 'joy'"):
        load_prompt_set(_write(tmp_path, "expression_names:\n  joy: joy\n"))
    with pytest.raises(UserError, match="built-in prompt sets: synth, bp4d"):
        load_prompt_set("bp5d")
    with pytest.raises(UserError, match="cycle"):
        load_prompt_set(_write(tmp_path, "base: mine.yaml\n"))


def test_user_file_overrides_one_description_and_keeps_the_rest(tmp_path):
    path = _write(tmp_path, "base: bp4d\nau_descriptions:\n  AU12: a broad smile\n")
    ps = load_prompt_set(path, aus=[1, 12])
    assert ps.au_description_texts([12, 1]) == ["a broad smile", load_prompt_set("bp4d").au_descriptions[1]]
    assert ps.sources[0] == str(path) and ps.name == "mine"
