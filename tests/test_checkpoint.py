"""Checkpoints round-trip exactly, never unpickle, and are written atomically."""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch

from clef.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from clef.commands import info
from clef.errors import UserError
from clef.model import build_model
from tiny import SMALL_CNN, TINY_CLIP

TEXTS = ["a photo of a person with happiness.", "lip corner puller"]


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make any unpickling during the test fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    class RefusingUnpickler(pickle.Unpickler):  # still a class: modules may subclass it on import
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.parametrize(
    "name,cfg", [("offline", SMALL_CNN), ("clip-vit-b16", TINY_CLIP)], ids=["offline", "clip"]
)
def test_round_trip_gives_identical_outputs_without_unpickling(tmp_path, name, cfg, no_unpickling):
    torch.manual_seed(0)
    model = build_model(name, cfg)
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    bias = torch.randn(12)
    weights, sidecar = save_checkpoint(
        tmp_path / "run" / "stage1",
        model,
        prompt_set="synth",
        labels=[f"AU{a}" for a in (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)],
        task="au",
        thresholds=[0.5] * 12,
        training_config={"lr": 1e-4, "epochs": 3},
        metrics={"f1_mean": 0.61},
        extra_tensors={"au_bias": bias},
    )
    assert weights.name == "stage1.safetensors" and sidecar.name == "stage1.json"
    assert sorted(p.name for p in weights.parent.iterdir()) == [
        "stage1.json",
        "stage1.safetensors",
    ]  # no temp files

    loaded, meta = load_checkpoint(weights)
    model.eval(), loaded.eval()
    size = model.preprocess.image_size
    images = torch.randn(3, 3, size, size)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), loaded.encode_image(images))
        assert torch.equal(
            model.encode_text(model.tokenize(TEXTS)), loaded.encode_text(loaded.tokenize(TEXTS))
        )
    assert loaded.scale().item() == pytest.approx(torch.tensor(3.0).exp().item())
    assert loaded.backbone_config == model.backbone_config and loaded.preprocess == model.preprocess
    assert (
        meta["backbone"]["name"] == name
        and meta["labels"][6] == "AU12"
        and meta["metrics"]["f1_mean"] == 0.61
    )
    assert meta["training_config"] == {"lr": 1e-4, "epochs": 3} and "torch" in meta["versions"]
    assert torch.equal(meta["extra_tensors"]["au_bias"], bias)


def test_clip_checkpoint_from_a_weights_file_rebuilds_without_it(tmp_path):
    from transformers import CLIPModel

    from clef.model.clip import ClipConfig, hf_config

    CLIPModel(hf_config(ClipConfig(**TINY_CLIP))).save_pretrained(tmp_path / "hf")
    model = build_model("clip-vit-b16", {"weights": str(tmp_path / "hf")})
    save_checkpoint(tmp_path / "ckpt", model)
    (tmp_path / "hf" / "model.safetensors").unlink()  # the original weights are gone
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # same weights; from_pretrained's tensor layouts can change the last bit
        torch.testing.assert_close(
            model.eval().encode_image(x), loaded.eval().encode_image(x), rtol=0, atol=1e-6
        )


def test_weights_of_another_architecture_are_a_user_error(tmp_path):
    save_checkpoint(tmp_path / "a", build_model("offline", SMALL_CNN))
    other = tmp_path / "b"
    save_checkpoint(other, build_model("offline", {**SMALL_CNN, "cnn_widths": (8, 32)}))
    (tmp_path / "a.safetensors").replace(tmp_path / "b.safetensors")
    with pytest.raises(UserError, match="do not fit backbone 'offline'"):
        load_checkpoint(other)
    with pytest.raises(UserError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_clef_info_prints_the_sidecar(tmp_path, capsys):
    save_checkpoint(
        tmp_path / "c", build_model("offline", SMALL_CNN), labels=["happiness", "sadness"], task="fer"
    )
    info.run(argparse.Namespace(checkpoint=str(tmp_path / "c.json"), json=False))
    out = capsys.readouterr().out
    assert "backbone    offline" in out and "happiness, sadness" in out and "cnn_widths" in out
    assert read_metadata(tmp_path / "c")["task"] == "fer"


def test_cli_info_end_to_end(tmp_path, capsys):
    from clef.cli import main

    save_checkpoint(tmp_path / "c", build_model("offline", SMALL_CNN), metrics={"f1_mean": 0.5})
    assert main(["info", str(tmp_path / "c.safetensors")]) == 0
    assert "f1_mean  0.5" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "no such checkpoint sidecar" in capsys.readouterr().err
