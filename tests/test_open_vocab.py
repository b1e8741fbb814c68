"""Open-vocabulary labels: the label-file syntax and its one-line errors, the column-name rule, and
scores equal to the cosine formula (sigmoid per label, softmax within a group)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clef.errors import UserError
from clef.open_vocab import (
    OpenLabel,
    OpenVocabularyScores,
    assign_columns,
    derived_name,
    read_label_file,
)

FILE = """\
# my labels
a person with a wide smile
frown = a person frowning

[group mood]
happy = a happy face
a sad face
[independent]
raised eyebrows
"""


def test_label_file_reads_independent_labels_groups_and_names(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text(FILE)
    labels = read_label_file(path)
    assert [(x.text, x.name, x.group) for x in labels] == [
        ("a person with a wide smile", None, None),
        ("a person frowning", "frown", None),
        ("a happy face", "happy", "mood"),
        ("a sad face", None, "mood"),
        ("raised eyebrows", None, None),
    ]
    assert labels[3].where == f"{path}, line 7"
    vocab = assign_columns(labels, taken=["source", "AU12"])
    assert vocab.columns == ("a_person_with_a_wide_smile", "frown", "happy", "a_sad_face", "raised_eyebrows")
    assert vocab.groups == {"mood": [2, 3]} and vocab.independent == [0, 1, 4]
    assert vocab.output_columns() == [
        "a_person_with_a_wide_smile_cos", "a_person_with_a_wide_smile_prob", "a_person_with_a_wide_smile",
        "frown_cos", "frown_prob", "frown",
        "raised_eyebrows_cos", "raised_eyebrows_prob", "raised_eyebrows",
        "happy_cos", "happy_prob", "a_sad_face_cos", "a_sad_face_prob", "mood",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text, message",
    [
        ("[group a]\nonly one\n", r"line 1: group 'a' has 1 label"),
        ("x\n[mood]\ny\n", r"line 2: a section header is \[group NAME\] or \[independent\]"),
        ("[group 9x]\na\nb\n", r"line 1: group name '9x'"),
        ("[group a]\nx\ny\n[group a]\nz\nw\n", r"line 4: group 'a' is already defined \(line 1\)"),
        ("1abc = a face\n", r"line 1: column name '1abc'"),
        ("smile =\n", r"line 1: label 'smile' has no text"),
        ("# only a comment\n\n", r"holds no label"),
    ],
)
def test_label_file_errors_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        read_label_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_derived_names_are_safe():
    assert derived_name("A person with a WIDE smile!") == "a_person_with_a_wide_smile"
    assert derived_name("sourire éclatant") == "sourire_eclatant"
    assert derived_name("3 raised brows") == "t_3_raised_brows"
    assert derived_name("!!!") == "label" and derived_name("微笑") == "label"
    long = derived_name("a person with a very wide and happy smile that reaches the eyes")
    assert len(long) <= 40 and not long.endswith("_") and long == "a_person_with_a_very_wide_and_happy"
    for text in ("x y", "Ünïcode ✓ text", "tab\tand\nnewline", "a,b;c"):
        assert __import__("re").fullmatch(r"[a-z_][a-z0-9_]*", derived_name(text))


def test_collisions_get_a_suffix_or_an_error():
    labels = [OpenLabel("smile"), OpenLabel("Smile!"), OpenLabel("source"), OpenLabel("AU12 prob")]
    vocab = assign_columns(labels, taken=["source", "AU12_prob", "AU12"])
    # "smile" and "Smile!" derive the same stem; "source" is a fixed column; "au12_prob" is free
    # (case matters) but keeps its own columns unique.
    assert vocab.columns == ("smile", "smile_2", "source_2", "au12_prob")
    assert len(set(vocab.output_columns())) == len(vocab.output_columns())
    with pytest.raises(UserError, match="column 'AU12' is already used"):
        assign_columns([OpenLabel("x", name="AU12", where="f, line 3")], taken=["AU12"])
    with pytest.raises(UserError, match="group name 'expression'"):
        assign_columns(
            [OpenLabel("a", group="expression"), OpenLabel("b", group="expression")], ["expression"]
        )


def test_scores_are_scale_times_cosine_and_groups_sum_to_one(tiny_clip):
    labels = [
        OpenLabel("a wide smile"),
        OpenLabel("a happy face", group="mood"),
        OpenLabel("a sad face", group="mood"),
        OpenLabel("an angry face", group="mood"),
    ]
    templates = ["a photo of a person with {}.", "a face with {}."]
    vocab = assign_columns(labels)
    with torch.no_grad():
        tiny_clip.logit_scale.fill_(np.log(3.0))  # a scale that keeps sigmoids away from 0 and 1
    scorer = OpenVocabularyScores(tiny_clip, vocab, templates)
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(5, tiny_clip.embed_dim, generator=g), dim=-1)
    out = scorer.columns(v)
    # The formula, computed here: each prompt embedded alone, mean over templates, renormalised.
    with torch.no_grad():
        prototypes = []
        for label in labels:
            prompts = [t.replace("{}", label.text) for t in templates]
            emb = torch.stack([tiny_clip.encode_text(tiny_clip.tokenize([p]))[0] for p in prompts])
            prototypes.append(torch.nn.functional.normalize(emb.mean(0), dim=0))
        cos = (v @ torch.stack(prototypes).T).numpy()
    np.testing.assert_allclose(out["a_wide_smile_cos"], cos[:, 0], atol=1e-5)
    np.testing.assert_allclose(out["a_wide_smile_prob"], 1 / (1 + np.exp(-3.0 * cos[:, 0])), atol=1e-5)
    np.testing.assert_array_equal(out["a_wide_smile"], (out["a_wide_smile_prob"] >= 0.5).astype(int))
    group = np.stack([out[f"{c}_prob"] for c in ("a_happy_face", "a_sad_face", "an_angry_face")], axis=1)
    expected = np.exp(3.0 * cos[:, 1:]) / np.exp(3.0 * cos[:, 1:]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(group, expected, atol=1e-5)
    np.testing.assert_allclose(group.sum(axis=1), 1.0, atol=1e-6)
    names = np.array(["a_happy_face", "a_sad_face", "an_angry_face"])
    assert list(out["mood"]) == list(names[group.argmax(axis=1)])
    assert list(out) == vocab.output_columns()
