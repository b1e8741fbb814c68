import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clef.errors import UserError
from clef.prep.align import AlignRecipe, align_faces, apply_transform
from clef.prep.mtcnn import RNet, _load_state, _rename, find_weights

EYES = slice(0, 2)


def to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def published_rnet_forward(state, x):
    """R-Net written directly on the published fdet state dict, flattening width-first as trained."""
    x = F.max_pool2d(
        F.prelu(
            F.conv2d(x, state["features.conv1.weight"], state["features.conv1.bias"]),
            state["features.prelu1.weight"],
        ),
        3,
        2,
        ceil_mode=True,
    )  # noqa: E501
    x = F.max_pool2d(
        F.prelu(
            F.conv2d(x, state["features.conv2.weight"], state["features.conv2.bias"]),
            state["features.prelu2.weight"],
        ),
        3,
        2,
        ceil_mode=True,
    )  # noqa: E501
    x = F.prelu(
        F.conv2d(x, state["features.conv3.weight"], state["features.conv3.bias"]),
        state["features.prelu3.weight"],
    )  # noqa: E501
    x = x.transpose(2, 3).flatten(1)  # (C, W, H) order
    x = F.prelu(
        F.linear(x, state["features.conv4.weight"], state["features.conv4.bias"]),
        state["features.prelu4.weight"],
    )  # noqa: E501
    return F.linear(x, state["conv5_2.weight"], state["conv5_2.bias"]), F.softmax(
        F.linear(x, state["conv5_1.weight"], state["conv5_1.bias"]), 1
    )[:, 1]  # noqa: E501


def test_weight_mapping_reproduces_the_published_network(detector):
    if detector.weights.layout != "fdet":
        pytest.skip("this check reads the fdet layout")
    state = _load_state(detector.weights.rnet)
    x = torch.randn(6, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    ours = detector.rnet(x)
    ref = published_rnet_forward(state, x)
    assert torch.allclose(ours[0], ref[0], atol=1e-5) and torch.allclose(ours[1], ref[1], atol=1e-6)
    # The facenet-pytorch layout of the same weights ((W, H, C) flatten, "dense" names) maps identically.
    facenet = {k.removeprefix("features."): v for k, v in state.items()}
    facenet = {k.replace("conv4.", "dense4.").replace("conv5_", "dense5_"): v for k, v in facenet.items()}
    facenet["dense4.weight"] = (
        state["features.conv4.weight"].reshape(128, 64, 3, 3).permute(0, 2, 3, 1).reshape(128, -1)
    )
    net = RNet()
    net.load_state_dict(_rename(facenet, "facenet", "rnet"))
    assert torch.allclose(net(x)[1], ref[1], atol=1e-6)


def test_onet_dense_input_order_matches_the_published_one(detector):
    if detector.weights.layout != "fdet":
        pytest.skip("this check reads the fdet layout")
    published = _load_state(detector.weights.onet)["features.conv5.weight"]
    trunk = torch.randn(4, 128, 3, 3, generator=torch.Generator().manual_seed(1))
    # published: flattened width-first (C, W, H); ours: the usual (C, H, W)
    expected = F.linear(trunk.transpose(2, 3).flatten(1), published)
    assert torch.allclose(F.linear(trunk.flatten(1), detector.onet.fc5.weight), expected, atol=1e-5)


def test_missing_weights_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no MTCNN weights in"):
        find_weights(tmp_path)


def test_astronaut_face_found_once_and_eyes_land_on_the_template(detector, astronaut):
    faces = detector.detect([to_chw(astronaut)])[0]
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.boxes[0].tolist()
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200  # the face, not the suit or the flag
    recipe = AlignRecipe(size=224)
    crops, matrices = align_faces(to_chw(astronaut), faces.landmarks, recipe)
    assert crops.shape == (1, 3, 224, 224) and crops.dtype == torch.uint8
    target = recipe.points()[EYES]
    # (a) the detected eyes, carried through the fitted transform
    moved = apply_transform(matrices[0], faces.landmarks[0].double())[EYES]
    assert (moved - target).norm(dim=1).max() < 5.0
    # (b) the eyes found again by detecting on the crop itself
    again = detector.detect([crops[0]])[0]
    assert len(again) == 1
    assert (again.landmarks[0, EYES].double() - target).norm(dim=1).max() < 5.0


def test_lfw_faces_are_detected_and_non_faces_are_not(detector, lfw):
    faces, non_faces = lfw
    found = detector.detect([to_chw(x) for x in faces])
    assert sum(len(f) > 0 for f in found) >= 95
    false = detector.detect([to_chw(x) for x in non_faces])
    assert sum(len(f) > 0 for f in false) <= 5


def test_flat_image_has_no_face(detector):
    flat = torch.full((3, 120, 160), 128, dtype=torch.uint8)
    assert len(detector.detect([flat])[0]) == 0
