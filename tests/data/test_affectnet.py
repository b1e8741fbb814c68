"""AffectNet-7/8: code order, codes 8-10 dropped, validation set = test split, balanced weights."""

import numpy as np
import pytest

from clef.data import load_dataset
from clef.data.sampling import class_balanced_weights
from clef.errors import UserError

HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
)


def _affectnet(root, image, train_codes=(0, 1, 1, 1, 7, 8, 9, 10), val_codes=(6, 2)):
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    for file_name, codes in (("training.csv", train_codes), ("validation.csv", val_codes)):
        lines = []
        for i, code in enumerate(codes):
            rel = f"{i % 2 + 1}/{file_name[:3]}{i}.jpg"
            image(root / "Manually_Annotated_Images" / rel)
            lines.append(f'{rel},10,10,50,50,"1.0;2.0;3.0",{code},0.1,-0.2\n')
        (lists / file_name).write_text(HEADER + "".join(lines))


def test_affectnet_eight_and_seven_classes(tmp_path, image):
    _affectnet(tmp_path, image)
    rec8 = load_dataset("affectnet8", tmp_path)
    assert list(rec8["expression"]) == [
        "neutral",
        "happiness",
        "happiness",
        "happiness",
        "contempt",
        "anger",
        "sadness",
    ]
    assert (
        list(rec8["split"]) == ["train"] * 5 + ["test"] * 2
    )  # the official validation set is the test split
    assert rec8.attrs["dropped"] == {"8 none": 1, "9 uncertain": 1, "10 non-face": 1}
    assert rec8.attrs["classes"][:3] == ("neutral", "happiness", "sadness")
    rec7 = load_dataset("affectnet7", tmp_path)
    assert "contempt" not in set(rec7["expression"]) and len(rec7) == 6
    assert rec7.attrs["dropped"]["7 contempt"] == 1 and rec7["dataset"].eq("affectnet7").all()


def test_affectnet_bad_rows(tmp_path, image):
    _affectnet(tmp_path, image, train_codes=(0, 11, 1))
    with pytest.raises(UserError, match=r"training.csv, line 3: expression '11' is not a code 0-10"):
        load_dataset("affectnet8", tmp_path)
    rec = load_dataset("affectnet8", tmp_path, on_error="skip")
    assert len(rec) == 4 and len(rec.attrs["skipped"]) == 1
    _affectnet(tmp_path, image, train_codes=(0, 1))
    (tmp_path / "Manually_Annotated_Images" / "2" / "tra1.jpg").unlink()
    with pytest.raises(UserError, match=r"training.csv, line 3: image .*tra1.jpg not found"):
        load_dataset("affectnet8", tmp_path)


def test_class_balanced_weights(tmp_path, image):
    _affectnet(tmp_path, image)
    rec = load_dataset("affectnet8", tmp_path)
    train = rec[rec["split"] == "train"]
    weights = class_balanced_weights(train)
    assert weights.sum() == pytest.approx(1.0)
    mass = {c: weights[(train["expression"] == c).to_numpy()].sum() for c in set(train["expression"])}
    np.testing.assert_allclose(list(mass.values()), 1 / 3)  # neutral, happiness, contempt equally likely
    assert weights[1] == pytest.approx(1 / 9)  # happiness: 3 records share 1/3
