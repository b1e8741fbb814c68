"""Relevance maps: Grad-CAM against a hand-split forward pass, attention relevance against a loop over
heads, shapes and ranges on CLIP's towers, the model left as it was, and a trained model's map for
"lip corner puller" on the mouth of a smiling face."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clef.explain import ATTENTION, GRAD_CAM, explain, save_explanations
from clef.finetuned import load_finetuned
from clef.model import build_model
from clef.synth.contrast import contrast_au
from clef.synth.face import face_geometry
from clef.synth.identity import sample_identity
from clef.synth.render import Nuisance, landmarks_to_pixels, render_face
from tiny import SMALL_CNN, SMALL_VIT

TEXT = "a photo of a person with lip corner puller."


def _face(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return render_face(sample_identity(rng, "lab"), contrast_au(True, 0), Nuisance(), size)


def _inputs(model, face, text):
    x = model.preprocess.normalize(torch.from_numpy(face).permute(2, 0, 1)[None].float() / 255)
    return x, model.tokenize([text])


def _reference_relevance(attentions, gradients) -> np.ndarray:
    """Chefer et al.'s rule written as loops: R = I; per block R += mean_h max(0, G_h * A_h) @ R."""
    n = attentions[0].shape[-1]
    relevance = np.eye(n)
    for a, g in zip(attentions, gradients, strict=True):
        a, g = a[0].detach().double().numpy(), g[0].double().numpy()
        a_bar = np.zeros((n, n))
        for h in range(a.shape[0]):
            a_bar += np.maximum(g[h] * a[h], 0.0)
        relevance = relevance + (a_bar / a.shape[0]) @ relevance
    return relevance


@pytest.fixture(scope="module")
def offline_cnn():
    torch.manual_seed(0)
    return build_model("offline", SMALL_CNN).eval()


@pytest.fixture(scope="module")
def offline_vit():
    torch.manual_seed(0)
    return build_model("offline", SMALL_VIT).eval()


def test_grad_cam_is_the_gradient_weighted_last_feature_map(offline_cnn):
    model = offline_cnn
    face = _face(64)
    e = explain(model, face, TEXT)
    # The reference splits the tower by hand at the output of its last stage.
    x, tokens = _inputs(model, face, TEXT)
    tower = model.image_tower
    features = tower.stem(x)
    for stage in tower.stages:
        features = stage(features)
    features = features.detach().requires_grad_(True)
    v = tower.projection(tower.norm(features.mean(dim=(2, 3))))
    t = model.text_tower(tokens)
    score = model.scale() * F.cosine_similarity(v, t)[0]
    (grad,) = torch.autograd.grad(score, features)
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1))[0]
    assert e.method == GRAD_CAM and e.grid.shape == (16, 16)  # 64 px halved by 2 stages
    np.testing.assert_allclose(e.grid, cam.detach().numpy(), rtol=1e-4, atol=1e-6)
    assert e.score == pytest.approx(float(score.detach()), rel=1e-5)
    with torch.no_grad():
        direct = model.scale() * (model.encode_image(x) @ model.encode_text(tokens).T)[0, 0]
    assert e.score == pytest.approx(float(direct), rel=1e-5)


def test_vit_and_text_relevance_follow_the_rule_block_by_block(offline_vit):
    model = offline_vit
    face = _face(64)
    e = explain(model, face, TEXT)
    x, tokens = _inputs(model, face, TEXT)
    with torch.enable_grad():
        v, image_attn, image_pool = model.image_tower.attention_forward(x)
        t, text_attn, text_pool = model.text_tower.attention_forward(tokens)
        score = model.scale() * F.cosine_similarity(v, t)[0]
        grads = torch.autograd.grad(score, [*image_attn, *text_attn])
    image_r = _reference_relevance(image_attn, grads[: len(image_attn)])
    text_r = _reference_relevance(text_attn, grads[len(image_attn) :])
    n = image_r.shape[0]
    image_expected = (image_pool[0].double().numpy() @ (image_r - np.eye(n)))[1:].reshape(8, 8)
    m = text_r.shape[0]
    text_expected = text_pool[0].double().numpy() @ (text_r - np.eye(m))
    assert e.method == ATTENTION and e.grid.shape == (8, 8)  # 64 px in 8 px patches
    np.testing.assert_allclose(e.grid, image_expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(e.token_relevance, text_expected, rtol=1e-4, atol=1e-7)
    # MiniLM's tokens: [CLS] ... [SEP], the markers flagged.
    assert e.tokens[0] == "[CLS]" and e.tokens[-1] == "[SEP]" and "lip" in e.tokens
    assert e.special.tolist() == [True] + [False] * (len(e.tokens) - 2) + [True]


def test_clip_towers_give_maps_of_the_right_shape_and_range(tiny_clip):
    face = _face(32)
    e = explain(tiny_clip, face, TEXT)
    assert e.method == ATTENTION
    assert e.grid.shape == (4, 4) and e.heatmap.shape == (32, 32)  # 32 px in 8 px patches
    assert (e.grid >= 0).all() and (e.token_relevance >= 0).all()
    assert e.heatmap.min() >= 0 and e.heatmap.max() == pytest.approx(1.0)
    n_tokens = int(tiny_clip.tokenize([TEXT])["attention_mask"].sum())
    assert len(e.tokens) == len(e.token_relevance) == len(e.special) == n_tokens
    assert e.tokens[0] == "<|startoftext|>" and e.tokens[-1] == "<|endoftext|>" and e.special[[0, -1]].all()
    assert e.image.shape == (32, 32, 3) and e.image.dtype == np.uint8


def test_explain_leaves_the_model_as_it_was(tiny_clip):
    tiny_clip.lock_text_tower()  # frozen parts must still be explained, and stay frozen
    tiny_clip.train()
    before = {k: v.clone() for k, v in tiny_clip.state_dict().items()}
    flags = [p.requires_grad for p in tiny_clip.parameters()]
    explain(tiny_clip, _face(32), TEXT)
    assert tiny_clip.training and [p.requires_grad for p in tiny_clip.parameters()] == flags
    assert all(p.grad is None for p in tiny_clip.parameters())
    assert all(torch.equal(before[k], v) for k, v in tiny_clip.state_dict().items())
    config = tiny_clip.text_tower.text_model.config
    assert config._attn_implementation != "eager"  # the recording switched it back


def test_a_face_of_the_wrong_size_is_refused(tiny_clip):
    with pytest.raises(ValueError, match="32x32x3"):
        explain(tiny_clip, _face(64), TEXT)


def test_saved_arrays_and_figure(tiny_clip, tmp_path):
    explanations = [explain(tiny_clip, _face(32), text) for text in (TEXT, "a face with raised brows.")]
    png, npz = save_explanations(explanations, tmp_path / "figs" / "face")
    assert png.stat().st_size > 5000
    arrays = np.load(npz)
    assert str(arrays["text_1"]) == "a face with raised brows." and arrays["image"].shape == (32, 32, 3)
    np.testing.assert_array_equal(arrays["token_relevance_0"], explanations[0].token_relevance)
    assert list(arrays["tokens_0"]) == explanations[0].tokens and arrays["grid_1"].shape == (4, 4)


def _box_mean(heatmap: np.ndarray, points: np.ndarray, pad: float) -> float:
    size = heatmap.shape[0]
    (x0, y0), (x1, y1) = np.floor(points.min(0) - pad), np.ceil(points.max(0) + pad)
    rows = slice(int(max(y0, 0)), int(min(y1, size - 1)) + 1)
    cols = slice(int(max(x0, 0)), int(min(x1, size - 1)) + 1)
    return float(heatmap[rows, cols].mean())


def test_lip_corner_puller_lights_up_the_mouth_of_a_smiling_face(contrast_model):
    """A model that learnt AU12 (F1 on its contrast test set printed in the sidecar) puts the relevance
    of "lip corner puller" on the mouth, not the forehead, of smiling faces it has not seen; the brow
    prompt on brow-raised faces moves it up."""
    model, meta = load_finetuned(contrast_model)
    assert dict(zip(meta["metrics"]["aus"], meta["metrics"]["f1"], strict=True))[12] > 0.6
    size = model.clef.preprocess.image_size
    smile_prompt = model.name_templates[0].replace("{}", "lip corner puller")
    brow_prompt = model.name_templates[0].replace("{}", "inner brow raiser")
    rng = np.random.default_rng(123)  # identities the model has not seen (training used seed 0)
    mouth_vs_forehead, upper_share = [], {"smile": [], "brow": []}
    for _ in range(8):
        identity = sample_identity(rng, "lab")
        for kind, au, prompt in (
            ("smile", contrast_au(True, 0), smile_prompt),
            ("brow", contrast_au(False, 1), brow_prompt),
        ):
            face = render_face(identity, au, Nuisance(), size)
            geometry = face_geometry(identity, au)
            mouth = landmarks_to_pixels(
                np.concatenate([geometry.lip_upper_outer, geometry.lip_lower_outer]), Nuisance(), size
            )
            forehead = landmarks_to_pixels(
                np.concatenate([geometry.forehead_lines.reshape(-1, 2), geometry.brows.reshape(-1, 2)]),
                Nuisance(),
                size,
            )
            heat = explain(model.clef, face, prompt).heatmap
            m, f = _box_mean(heat, mouth, 1.0), _box_mean(heat, forehead, 1.0)
            upper_share[kind].append(f / max(m + f, 1e-9))
            if kind == "smile":
                mouth_vs_forehead.append((m, f))
    pairs = np.array(mouth_vs_forehead)
    assert (pairs[:, 0] > pairs[:, 1]).all(), pairs
    assert pairs[:, 0].mean() > 3 * pairs[:, 1].mean(), pairs
    assert np.mean(upper_share["brow"]) > np.mean(upper_share["smile"]) + 0.2, upper_share
