"""BP4D and RAF-DB layout loaders on tiny fixture trees written by the tests."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clef.data import load_dataset
from clef.data.folds import assert_subject_exclusive, load_protocol, split_fold
from clef.data.records import au_targets
from clef.errors import UserError


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 90, 80)).save(path)


def _bp4d(root: Path, rows: str, subject="F001", task="T1", frames=(2440, 2441, 2442)) -> None:
    for f in frames:
        _image(root / subject / task / f"{f}.jpg")
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True, exist_ok=True)
    (occ / f"{subject}_{task}.csv").write_text(rows)


def test_bp4d_masks_nine_and_maps_folds(tmp_path):
    _bp4d(tmp_path, "0,1,2,4,27\n2440,1,0,9,1\n2441,0,9,1,0\n2442,9,9,9,9\n")
    _bp4d(tmp_path, "0,1,2,4,27\n7,1,1,1,1\n", subject="M003", task="T8", frames=(7,))
    rec = load_dataset("bp4d", tmp_path)
    assert list(rec["frame"]) == [2440, 2441, 2442, 7]
    assert "AU27" not in rec.columns  # AUs the project does not know are ignored
    y, mask = au_targets(rec, (1, 2, 4))
    np.testing.assert_array_equal(mask[0], [True, True, False])
    np.testing.assert_array_equal(y[0], [1, 0, 0])
    assert not mask[2].any()  # a fully uncoded frame stays fully masked
    assert list(rec["fold"]) == [1, 1, 1, 3]  # F001 is in part 1, M003 in part 3
    assert rec["path"].map(lambda p: Path(p).is_file()).all()


def test_bp4d_errors_name_file_and_line(tmp_path):
    _bp4d(tmp_path, "0,1,2\n2440,1,0\n2441,2,0\n")
    with pytest.raises(UserError, match=r"F001_T1.csv, line 3: AU 1 value '2'"):
        load_dataset("bp4d", tmp_path)
    rec = load_dataset("bp4d", tmp_path, on_error="skip")
    assert len(rec) == 1 and len(rec.attrs["skipped"]) == 1


def test_bp4d_missing_image(tmp_path):
    _bp4d(tmp_path, "0,1\n2440,1\n9999,0\n")
    with pytest.raises(UserError, match=r"line 3: image for frame 9999 not found"):
        load_dataset("bp4d", tmp_path)


def test_bp4d_side_file_merges_intensities(tmp_path):
    _bp4d(tmp_path, "0,1\n2440,1\n2441,0\n2442,9\n")
    pd.DataFrame(
        {
            "subject": ["F001"] * 3,
            "activity": ["T1"] * 3,
            "frame": [2440, 2441, 2442],
            "expression": ["happiness", "neutral", "pain"],
            "AU1_intensity": [2.5, 0.0, 3.0],
        }
    ).to_csv(tmp_path / "clef_synth_labels.csv", index=False)
    rec = load_dataset("bp4d", tmp_path)
    assert list(rec["expression"]) == ["happiness", "neutral", "pain"]
    assert list(rec["AU1_intensity"]) == [2.5, 0.0, 3.0]
    assert np.isnan(rec["AU1"].iloc[2])


def test_rafdb_order_and_split(tmp_path):
    basic = tmp_path / "basic"
    (basic / "EmoLabel").mkdir(parents=True)
    (basic / "EmoLabel" / "list_patition_label.txt").write_text(
        "train_00001.jpg 1\ntrain_00002.jpg 4\ntest_0001.jpg 7\n"
    )
    for name in ("train_00001", "train_00002", "test_0001"):
        _image(basic / "Image" / "aligned" / f"{name}_aligned.jpg")
    rec = load_dataset("rafdb", tmp_path)
    assert list(rec["expression"]) == ["surprise", "happiness", "neutral"]
    assert list(rec["split"]) == ["train", "train", "test"]
    (basic / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 8\n")
    with pytest.raises(UserError, match=r"line 1: label '8' is not 1-7"):
        load_dataset("rafdb", tmp_path)


def test_unknown_dataset_lists_choices(tmp_path):
    with pytest.raises(
        UserError, match="valid: affectnet7, affectnet8, bp4d, bp4dplus, csv, disfa, ferplus, rafdb"
    ):
        load_dataset("bp5d", tmp_path)


def test_bp4d_protocol_is_subject_exclusive():
    proto = load_protocol("bp4d")
    assert sum(len(p) for p in proto.parts.values()) == 41
    for fold in proto.folds:
        train, test = proto.subjects(fold)
        assert not set(train) & set(test) and len(train) + len(test) == 41
    assert proto.subjects(1)[1][0] == "F004"  # fold 1 tests part 3


def test_split_fold_rejects_leaks():
    rec = pd.DataFrame({"subject": ["F001", "F004", "F004"], "fold": pd.array([1, 3, 3], dtype="Int64")})
    train, test = split_fold(rec, 1)
    assert list(test["subject"]) == ["F004", "F004"] and list(train["subject"]) == ["F001"]
    with pytest.raises(UserError, match="share subjects: F001"):
        assert_subject_exclusive(rec.iloc[:1], rec.iloc[:1])
