"""The CLIP backbone loads Hugging Face folders and OpenAI/FaRL state dicts to the same model."""

from __future__ import annotations

import pickle

import pytest
import torch
from openai_reference import OpenAICLIP, openai_vit_b16_shapes
from transformers import CLIPModel

from clef.errors import UserError
from clef.model import build_model
from clef.model.clip import ClipConfig, config_from_openai_state_dict, convert_openai_state_dict, hf_config
from tiny import TINY_CLIP

TEXTS = ["a photo of a person with happiness.", "the lips pressed firmly together", "jaw drop!"]


def test_hugging_face_folder_gives_transformers_own_embeddings(tmp_path):
    torch.manual_seed(0)
    hf = CLIPModel(hf_config(ClipConfig(**TINY_CLIP))).eval()
    hf.save_pretrained(tmp_path / "clip")
    model = build_model("clip-vit-b16", {"weights": str(tmp_path / "clip")}).eval()
    assert model.backbone_config.vision_width == 32 and model.backbone_config.embed_dim == 16

    images = torch.randn(3, 3, 32, 32)
    tokens = model.tokenize(TEXTS)
    with torch.no_grad():
        ref = hf(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=images)
        img, txt = model.encode_image(images), model.encode_text(tokens)
    torch.testing.assert_close(img, ref.image_embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(txt, ref.text_embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.scale() * img @ txt.T, ref.logits_per_image, rtol=0, atol=1e-5)


def _tiny_openai(seed: int = 0) -> OpenAICLIP:
    torch.manual_seed(seed)
    # Widths of 64/128 give 1 and 2 heads (OpenAI: heads = width / 64).
    return OpenAICLIP(
        embed_dim=24,
        resolution=32,
        patch=8,
        v_width=128,
        v_layers=2,
        context=77,
        vocab=49408,
        t_width=64,
        t_layers=2,
    ).eval()


@pytest.mark.parametrize("wrapped", [True, False], ids=["farl-style", "bare"])
def test_openai_layout_state_dict_gives_the_reference_forward(tmp_path, wrapped):
    ref = _tiny_openai()
    state = ref.state_dict()
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": state} if wrapped else state, path)
    model = build_model("clip-vit-b16", {"weights": str(path)}).eval()
    cfg = model.backbone_config
    assert (cfg.vision_width, cfg.vision_heads, cfg.text_width, cfg.text_heads, cfg.embed_dim) == (
        128,
        2,
        64,
        1,
        24,
    )

    images = torch.randn(2, 3, 32, 32)
    tokens = model.tokenize(TEXTS)
    with torch.no_grad():
        want_img = torch.nn.functional.normalize(ref.encode_image(images), dim=-1)
        # OpenAI's reference pools at argmax(id); padding with EOT keeps the first EOT the argmax.
        want_txt = torch.nn.functional.normalize(ref.encode_text(tokens["input_ids"]), dim=-1)
        torch.testing.assert_close(model.encode_image(images), want_img, rtol=0, atol=1e-5)
        torch.testing.assert_close(model.encode_text(tokens), want_txt, rtol=0, atol=1e-5)
    assert model.logit_scale.item() == pytest.approx(2.5)


def test_real_vit_b16_openai_key_set_converts_with_strict_matching():
    shapes = openai_vit_b16_shapes()
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    cfg = config_from_openai_state_dict(state, ClipConfig())
    assert cfg == ClipConfig()  # the shapes read back as the ViT-B/16 defaults
    converted, unknown = convert_openai_state_dict(state)
    assert unknown == []
    with torch.device("meta"):  # no memory or init time for the 150M random weights
        model = CLIPModel(hf_config(cfg))
    result = model.load_state_dict(converted, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    # Values land where they belong: spot-check the reshaped ones.
    w = state["visual.transformer.resblocks.5.attn.in_proj_weight"]
    layer = model.vision_model.encoder.layers[5].self_attn
    assert torch.equal(layer.k_proj.weight, w[768:1536]) and torch.equal(layer.v_proj.weight, w[1536:])
    assert torch.equal(model.text_projection.weight, state["text_projection"].T)
    assert torch.equal(model.visual_projection.weight, state["visual.proj"].T)
    assert torch.equal(
        model.text_model.encoder.layers[11].mlp.fc2.bias, state["transformer.resblocks.11.mlp.c_proj.bias"]
    )


def test_missing_weight_and_extra_keys_are_reported(tmp_path):
    state = _tiny_openai().state_dict()
    state["mlm_head.weight"] = torch.zeros(2)  # an extra head as in some FaRL files
    torch.save({"state_dict": state}, tmp_path / "extra.pt")
    with pytest.warns(UserWarning, match="mlm_head.weight"):
        build_model("clip-vit-b16", {"weights": str(tmp_path / "extra.pt")})
    del state["ln_final.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(UserError, match="lacks 1 CLIP weights"):
        build_model("clip-vit-b16", {"weights": str(tmp_path / "missing.pt")})


class _Payload:
    def __reduce__(self):  # would run code if unpickled without weights_only
        return (print, ("unpickled!",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_files_that_need_unpickling_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _Payload()}, handle)
    with pytest.raises(UserError, match="weights_only=True"):
        build_model("clip-vit-b16", {"weights": str(path)})


def test_unknown_weight_source_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        build_model("clip-vit-b16", {"weights": str(tmp_path / "nowhere.pt")})
