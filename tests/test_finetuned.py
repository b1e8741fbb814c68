"""The fine-tuned model: one prototype function for training and inference, the text-embedding cache
rule, and its checkpoint (round trip, refusal of a stage-1 checkpoint)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clef.checkpoint import save_checkpoint
from clef.errors import UserError
from clef.evaluation import evaluate_predictions
from clef.finetune import FinetuneConfig, build_finetune_model
from clef.finetuned import FineTuneModel, load_finetuned, save_finetuned
from clef.inference import predict
from clef.label_space import label_space
from clef.model import build_text_classifier
from clef.prompts import load_prompt_set
from clef.run_config import TrainableConfig
from clef.stage2 import MethodConfig

PROMPTS = load_prompt_set("labels")
AUS = (1, 2, 4, 12)
CLASSES = ("happiness", "sadness", "surprise")


def _model(clef, task="au", text_blocks=None, **method) -> FineTuneModel:
    space = label_space(
        task, PROMPTS, aus=AUS if task == "au" else (), classes=CLASSES if task == "fer" else ()
    )
    cfg = MethodConfig(task=task, **method)
    return build_finetune_model(clef, space, cfg, "labels", TrainableConfig(text_blocks=text_blocks)).eval()


def _records(tmp_path, n=5, size=40):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        rows.append(
            {
                "path": str(path),
                "expression": CLASSES[i % 3],
                **{f"AU{a}": float((i + a) % 2) for a in AUS},
            }
        )
    table = pd.DataFrame(rows)
    table.loc[0, "AU1"] = np.nan
    return table


# ------------------------------------------------------------------------------------- prototypes
@pytest.mark.parametrize(
    ("task", "method", "kinds", "shape"),
    [
        ("au", {"head": "names"}, ("names",), (4,)),
        (
            "au",
            {"head": "names", "au_prompt": "pair", "description_loss": False},
            ("names", "negatives"),
            (2, 4),
        ),
        ("fer", {"head": "descriptions", "description_loss": False}, ("descriptions",), (3,)),
        ("fer", {"head": "linear", "description_loss": False}, (), None),
    ],
)
def test_inference_prototypes_average_every_template(tiny_clip, task, method, kinds, shape):
    model = _model(tiny_clip, task, **method)
    assert model.text_kinds() == kinds
    protos = model.prototypes()
    if shape is None:
        assert protos is None
        return
    assert protos.shape == (*shape, tiny_clip.embed_dim)
    space = model.space
    expected = {
        "names": build_text_classifier(tiny_clip, space.names, PROMPTS.name_templates),
        "negatives": build_text_classifier(
            tiny_clip, space.names, method.get("negative_templates") or MethodConfig().negative_templates
        ),
        "descriptions": build_text_classifier(tiny_clip, space.descriptions, PROMPTS.description_templates),
    }
    if kinds == ("names", "negatives"):
        torch.testing.assert_close(protos, torch.stack([expected["negatives"], expected["names"]]))
    else:
        torch.testing.assert_close(protos, expected[kinds[0]])


def test_training_prototypes_put_each_label_into_one_drawn_template(tiny_clip):
    model = _model(tiny_clip, "fer", head="names", description_loss=False)
    g = torch.Generator().manual_seed(4)
    text = model.text_embeddings(model.text_kinds(), torch.Generator().manual_seed(4))
    choice = torch.randint(len(PROMPTS.name_templates), (len(CLASSES),), generator=g)
    prompts = [
        PROMPTS.name_templates[int(k)].replace("{}", t)
        for t, k in zip(model.space.names, choice, strict=True)
    ]
    expected = tiny_clip.encode_text(tiny_clip.tokenize(prompts))
    torch.testing.assert_close(model.prototypes(text), expected, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------ text cache
def test_a_frozen_text_tower_is_encoded_once_and_refreshed_when_its_weights_change(tiny_clip):
    tiny_clip.lock_text_tower(0)
    calls = []
    original = tiny_clip.encode_text

    def counting(tokens):
        calls.append(tokens["input_ids"].shape[0])
        return original(tokens)

    tiny_clip.encode_text = counting
    first = tiny_clip.embed_texts(["a smile", "a frown"])
    again = tiny_clip.embed_texts(["a frown", "a smile", "a frown"])
    assert calls == [2] and not first.requires_grad
    torch.testing.assert_close(again, first[[1, 0, 1]])
    with torch.no_grad():  # any change of a text-tower weight (here the projection) empties the cache
        next(tiny_clip.text_tower.parameters()).add_(0.5)
    changed = tiny_clip.embed_texts(["a smile"])
    assert calls == [2, 1] and not torch.allclose(changed[0], first[0])


def test_a_trainable_text_tower_is_run_every_time_with_gradients(tiny_clip):
    tiny_clip.lock_text_tower(1)  # the last block and the projection train
    with torch.no_grad():  # even under no_grad nothing is cached for a tower that can change
        tiny_clip.embed_texts(["a smile"])
    out = tiny_clip.embed_texts(["a smile"])
    assert out.requires_grad
    out.sum().backward()
    assert all(p.grad is not None for p in tiny_clip.text_tower.projection_parameters())


# ------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("task", ["au", "fer"])
def test_checkpoint_round_trip_predicts_the_same(tiny_clip, tmp_path, task):
    model = _model(tiny_clip, task=task)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.3)
    records = _records(tmp_path)
    before = predict(model, records, batch_size=2, progress=False)
    save_finetuned(tmp_path / "ft", model, training_config=FinetuneConfig(), metrics={"x": 1.0})
    loaded, meta = load_finetuned(tmp_path / "ft")
    after = predict(loaded, records, batch_size=3, progress=False)
    np.testing.assert_allclose(before.probabilities, after.probabilities, atol=1e-5)
    assert loaded.space == model.space
    assert meta["labels"] == list(model.space.ids) and meta["task"] == task
    assert (meta["thresholds"] is None) == (task == "fer")
    result = evaluate_predictions(after, records)
    if task == "au":
        assert result.n_coded == [4, 5, 5, 5]  # the uncoded AU1 of row 0 is excluded
    else:
        assert sum(map(sum, result.confusion)) == len(records)


def test_a_stage1_checkpoint_is_not_a_finetuned_one(tiny_clip, tmp_path):
    save_checkpoint(tmp_path / "s1", tiny_clip, task="pretrain")
    with pytest.raises(UserError, match="stage-2"):
        load_finetuned(tmp_path / "s1")


def test_pair_prompts_need_independent_labels_and_names(tiny_clip):
    space = label_space("fer", PROMPTS, classes=CLASSES)
    with pytest.raises(UserError, match="pair"):
        FineTuneModel(tiny_clip, space, head="names", au_prompt="pair", negative_templates=("no {}",))
    with pytest.raises(UserError, match="unknown head"):
        FineTuneModel(tiny_clip, space, head="prompts")
