"""The backbone registry: names users type, configs with validated keys."""

from __future__ import annotations

import argparse

import pytest

from clef.commands import listing
from clef.errors import UserError
from clef.model import BACKBONES, backbone_config, get_backbone
from clef.model.offline import OfflineConfig


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(UserError) as err:
        get_backbone("resnet50")
    assert "resnet50" in str(err.value) and all(name in str(err.value) for name in BACKBONES)


def test_config_overrides_are_typed_and_unknown_keys_rejected():
    cfg = backbone_config("offline", {"image_encoder": "cnn", "cnn_widths": [16, 32], "image_size": 96})
    assert cfg == OfflineConfig(image_encoder="cnn", cnn_widths=(16, 32), image_size=96)
    with pytest.raises(UserError, match="valid keys: .*image_size"):
        backbone_config("offline", {"image_sise": 96})
    with pytest.raises(UserError, match="valid: face-resnet, cnn, vit"):
        backbone_config("offline", {"image_encoder": "resnet"})
    with pytest.raises(UserError, match="multiple of vit_patch_size"):
        backbone_config("offline", {"image_encoder": "vit", "image_size": 60})


def test_custom_size_needs_no_code():
    from clef.model import build_model

    model = build_model(
        "offline",
        {
            "image_encoder": "vit",
            "image_size": 48,
            "vit_patch_size": 12,
            "vit_width": 24,
            "vit_heads": 2,
            "vit_depth": 1,
            "embed_dim": 8,
        },
    )
    import torch

    assert model.encode_image(torch.zeros(2, 3, 48, 48)).shape == (2, 8)
    assert model.preprocess.image_size == 48


def test_clef_list_backbones_prints_each_name_with_a_description(capsys):
    listing.run(argparse.Namespace(topic="backbones"))
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(BACKBONES)
    assert all(len(line.split()) > 3 for line in out)
    listing.run(argparse.Namespace(topic="prompts"))
    assert "bp4dplus" in capsys.readouterr().out


def test_cli_list_end_to_end(capsys):
    from clef.cli import main

    assert main(["list", "backbones"]) == 0
    assert "clip-vit-b16" in capsys.readouterr().out
