from __future__ import annotations

import json
import math

import pytest
import torch

from clef.augment import AugmentConfig, BatchAugment, two_views
from clef.data.sampler import RandomBatchSampler
from clef.engine import EngineConfig, ParamGroup, seed_everything, train
from clef.losses import image_text_loss, nt_xent_loss, supcon_loss
from clef.stage1 import SpreadMonitor, Stage1LossConfig, Stage1Step

K, SIZE = 3, 12


class Dummy(torch.nn.Module):
    """The model contract in miniature: encode_image, encode_text, scale() from a log logit scale."""

    def __init__(self) -> None:
        super().__init__()
        self.image = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, 16))
        self.text = torch.nn.Embedding(10, 16)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, x):
        return torch.nn.functional.normalize(self.image(x), dim=-1)

    def scale(self):
        return self.logit_scale.exp().clamp(max=100)

    def encode_text(self, tokens):
        return torch.nn.functional.normalize(self.text(tokens).mean(dim=1), dim=-1)

    def embed_texts(self, texts):  # the model contract's text entry point (ClefModel.embed_texts)
        return self.encode_text(TOKENS[[TEXTS.index(t) for t in texts]])


TEXTS = ["listen to a joke", "watch a sad film", "a sudden noise"]  # K = 3 activity texts
TOKENS = torch.tensor([[1, 2], [3, 4], [5, 6]])  # their "tokens"
AUG = BatchAugment(AugmentConfig(size=SIZE))


def _batch(b=6):
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (b, 3, SIZE, SIZE), dtype=torch.uint8, generator=g),
        "activity": torch.arange(b) % K,
    }


@pytest.mark.parametrize("image_loss", ["supcon", "simclr"])
def test_step_equals_the_losses_on_the_same_views(image_loss):
    torch.manual_seed(0)
    model, batch = Dummy(), _batch()
    cfg = Stage1LossConfig(image_loss=image_loss, temperature=0.2)
    out = Stage1Step(cfg, AUG, torch.Generator().manual_seed(4), TEXTS)(model, batch)

    v1, v2 = two_views(batch["image"], AUG, torch.Generator().manual_seed(4))
    z1, z2 = model.encode_image(v1), model.encode_image(v2)
    labels = batch["activity"]
    ii = supcon_loss(z1, z2, labels, 5.0) if image_loss == "supcon" else nt_xent_loss(z1, z2, 0.2)
    ia = image_text_loss(
        torch.cat([z1, z2]), model.encode_text(TOKENS), torch.cat([labels, labels]), 1 / 0.07
    )
    assert out["loss_ii"].item() == pytest.approx(ii.item(), rel=1e-5)
    assert out["loss_ia"].item() == pytest.approx(ia.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(ii.item() + ia.item(), rel=1e-5)


def test_gradients_reach_every_parameter_only_when_used():
    model = Dummy()
    Stage1Step(Stage1LossConfig(), AUG, torch.Generator(), TEXTS)(model, _batch())["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model = Dummy()
    Stage1Step(Stage1LossConfig(image_text=False), AUG, torch.Generator())(model, _batch())["loss"].backward()
    assert model.text.weight.grad is None and model.logit_scale.grad is None
    assert model.image[1].weight.grad is not None


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="at least one loss"):
        Stage1LossConfig(image_loss="none", image_text=False)
    with pytest.raises(ValueError, match="activity_texts"):
        Stage1Step(Stage1LossConfig(), AUG, torch.Generator())
    batch = _batch()
    batch["activity"][0] = -1
    with pytest.raises(ValueError, match="without one"):
        Stage1Step(Stage1LossConfig(), AUG, torch.Generator(), TEXTS)(Dummy(), batch)


def test_engine_runs_stage1_and_lowers_the_loss(tmp_path):
    _, lines = _colour_run(tmp_path, None, log_every=1)
    assert (
        len(lines) == 15 and math.isfinite(lines[-1]["loss"]) and lines[-1]["loss"] < 0.8 * lines[0]["loss"]
    )


def test_the_activity_texts_go_through_the_models_text_entry_point():
    model = Dummy()
    seen = []
    embed = model.embed_texts

    def recording(texts):
        seen.append(list(texts))
        return embed(texts)

    model.embed_texts = recording  # caching is the model's business (ClefModel.embed_texts)
    step = Stage1Step(Stage1LossConfig(), AUG, torch.Generator(), TEXTS)
    for _ in range(2):
        step(model, _batch())
    assert seen == [TEXTS, TEXTS]


def _colour_run(tmp_path, monitor, log_every=5):
    """15 steps of stage 1 on a learnable toy: activity k = images of one colour plus noise
    (optionally monitored); -> (model, the metrics.jsonl records)."""
    seed_everything(0)
    model = Dummy()
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % K
    base = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200]])[labels].view(48, 3, 1, 1)
    images = (base + torch.randint(-30, 30, (48, 3, SIZE, SIZE), generator=g)).clamp(0, 255).to(torch.uint8)
    data = [{"image": images[i], "activity": labels[i]} for i in range(48)]
    loader = torch.utils.data.DataLoader(data, batch_sampler=RandomBatchSampler(48, 12, seed=0))
    gen = torch.Generator().manual_seed(1)
    groups = {"all": ParamGroup(model.parameters(), 3e-3)}
    cfg = EngineConfig(steps=15, warmup_steps=3, log_every=log_every, checkpoint_every=15, progress=False)
    watch = monitor(images[:12]) if monitor else None
    train(
        model, Stage1Step(Stage1LossConfig(), AUG, gen, TEXTS), groups, loader, cfg, tmp_path, monitor=watch
    )
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return model, lines


def test_the_spread_monitor_logs_collapse_and_changes_nothing_the_run_learns(tmp_path):
    plain, plain_lines = _colour_run(tmp_path / "a", None)
    watched, lines = _colour_run(tmp_path / "b", lambda x: SpreadMonitor(x, lambda v: v))
    for a, b in zip(plain.state_dict().values(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the monitor draws no random number and leaves the model as it was
    assert [line["loss"] for line in lines] == [line["loss"] for line in plain_lines]
    assert [line["step"] for line in lines] == [5, 10, 15]
    assert all(
        -1.0 <= line["spread/mean_cosine"] <= 1.0 and line["spread/effective_rank"] >= 1.0 for line in lines
    )
    collapsed = SpreadMonitor(torch.full((6, 3, SIZE, SIZE), 7, dtype=torch.uint8), lambda v: v)(watched)
    assert collapsed["spread/mean_cosine"] == pytest.approx(1.0, abs=1e-5)  # 6 identical frames
    assert watched.training  # its mode given back
