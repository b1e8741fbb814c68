"""The label space: ids are data, the activation follows ``multi_label``, texts come from the prompt set."""

from __future__ import annotations

import pytest
import torch

from clef.errors import UserError
from clef.label_space import LabelSpace, au_label_space, expression_label_space, label_space
from clef.prompts import load_prompt_set

PROMPTS = load_prompt_set("labels")


def test_au_space_carries_numbers_and_texts_in_order():
    space = au_label_space(PROMPTS, [12, 1, 4])
    assert space.ids == ("AU12", "AU1", "AU4") and space.aus == (12, 1, 4)
    assert space.names == tuple(PROMPTS.au_names[a] for a in (12, 1, 4))
    assert space.descriptions == tuple(PROMPTS.au_descriptions[a] for a in (12, 1, 4))
    assert space.multi_label and space.is_au and space.task == "au"
    assert space.thresholds() == {"AU12": 0.5, "AU1": 0.5, "AU4": 0.5}


def test_expression_space_is_one_of_c():
    space = expression_label_space(PROMPTS, ["sadness", "happiness"])
    assert space.ids == ("sadness", "happiness") and space.aus == ()
    assert not space.multi_label and space.task == "fer" and space.thresholds() is None
    assert space.names == (PROMPTS.expression_names["sadness"], PROMPTS.expression_names["happiness"])


def test_activation_is_sigmoid_for_independent_labels_softmax_otherwise():
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    independent = LabelSpace(("a", "b", "c"), ("a", "b", "c"), ("a", "b", "c"), multi_label=True)
    exclusive = LabelSpace(("a", "b", "c"), ("a", "b", "c"), ("a", "b", "c"), multi_label=False)
    torch.testing.assert_close(independent.probabilities(logits), torch.sigmoid(logits))
    torch.testing.assert_close(exclusive.probabilities(logits), logits.softmax(-1))
    assert float(exclusive.probabilities(logits).sum()) == pytest.approx(1.0)
    # An open-vocabulary space of independent labels is neither an AU nor an FER space.
    assert independent.task == "multi-label" and not independent.is_au


def test_dict_round_trip():
    space = au_label_space(PROMPTS, [1, 2])
    assert LabelSpace.from_dict(space.to_dict()) == space
    with pytest.raises(UserError, match="lacks multi_label"):
        LabelSpace.from_dict({"ids": ["a"], "names": ["a"], "descriptions": ["a"]})


def test_bad_spaces_are_refused():
    with pytest.raises(UserError, match="unique"):
        LabelSpace(("a", "a"), ("x", "y"), ("x", "y"), multi_label=True)
    with pytest.raises(UserError, match="at least one"):
        label_space("au", PROMPTS, aus=())
    with pytest.raises(UserError, match="unknown task"):
        label_space("intensity-x", PROMPTS)
    with pytest.raises(UserError, match="AU99"):
        au_label_space(PROMPTS, [99])
