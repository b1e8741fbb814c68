"""DISFA loader: intensity >= 2 -> present, the 1-based label / image-number offset, bad input."""

import numpy as np
import pandas as pd
import pytest

from clef.data import load_dataset
from clef.data.records import au_targets
from clef.errors import UserError
from clef.labels import DISFA_CODED_AUS


def _disfa(root, image, subject="SN001", images=(0, 1, 2), au1="1,0\n2,2\n3,5\n", other="1,1\n2,1\n3,0\n"):
    labels = root / "ActionUnit_Labels" / subject
    labels.mkdir(parents=True, exist_ok=True)
    for au in DISFA_CODED_AUS:
        (labels / f"{subject}_au{au}.txt").write_text(au1 if au == 1 else other)
    for i in images:
        image(root / subject / f"{i}.png")


def test_disfa_threshold_and_zero_based_frames(tmp_path, image):
    _disfa(tmp_path, image)
    rec = load_dataset("disfa", tmp_path)
    assert list(rec["frame"]) == [0, 1, 2]  # label frame 1 is image 0.png by default
    assert rec["path"].iloc[0].endswith("SN001/0.png")
    assert list(rec["AU1_intensity"]) == [0, 2, 5]
    assert list(rec["AU1"]) == [0, 1, 1]  # present = intensity >= 2
    assert list(rec["AU2"]) == [0, 0, 0]  # intensity 1 is absent, not present
    assert [c for c in rec.columns if c.startswith("AU") and "_" not in c] == [
        f"AU{a}" for a in DISFA_CODED_AUS
    ]
    assert list(rec["fold"]) == [1, 1, 1]  # SN001 is in part 1 of the shipped protocol
    assert rec["activity"].isna().all()


def test_disfa_one_based_frames(tmp_path, image):
    _disfa(tmp_path, image, images=(1, 2, 3))
    rec = load_dataset("disfa", tmp_path, first_frame=1)
    assert list(rec["frame"]) == [1, 2, 3]
    assert rec["path"].iloc[0].endswith("SN001/1.png") and list(rec["AU1_intensity"]) == [0, 2, 5]
    # The default (0-based) reading of this 1-based tree misses label frame 1's image 0.png.
    with pytest.raises(UserError, match=r"SN001_au1.txt, line 1: image for label frame 1 \(image number 0"):
        load_dataset("disfa", tmp_path)
    shifted = load_dataset("disfa", tmp_path, on_error="skip")
    # Skipping shifts every label by one image: image 1.png would get label frame 2 (intensity 2).
    assert list(shifted["frame"]) == [1, 2] and list(shifted["AU1_intensity"]) == [2, 5]
    with pytest.raises(UserError, match="first_frame must be a non-negative integer"):
        load_dataset("disfa", tmp_path, first_frame=-1)


def test_disfa_bad_lines_name_file_and_line(tmp_path, image):
    _disfa(tmp_path, image, au1="1,0\n2;2\n3,5\n")
    with pytest.raises(UserError, match=r"SN001_au1.txt, line 2: expected 'frameIdx,intensity'"):
        load_dataset("disfa", tmp_path)
    rec = load_dataset("disfa", tmp_path, on_error="skip")
    # The bad line makes AU1 of frame 2 uncoded (masked), never absent.
    assert np.isnan(rec["AU1"].iloc[1]) and rec["AU2"].iloc[1] == 0
    assert len(rec.attrs["skipped"]) == 1
    _disfa(tmp_path, image, au1="1,0\n2,7\n3,5\n")
    with pytest.raises(UserError, match=r"line 2: intensity 7 is not 0-5"):
        load_dataset("disfa", tmp_path)
    _disfa(tmp_path, image, au1="0,0\n2,2\n")
    with pytest.raises(UserError, match=r"line 1: frame index 0 is not 1-based"):
        load_dataset("disfa", tmp_path)


def test_disfa_missing_au_file_and_frame(tmp_path, image):
    _disfa(tmp_path, image, au1="1,0\n2,3\n")  # AU1 does not list frame 3
    (tmp_path / "ActionUnit_Labels" / "SN001" / "SN001_au26.txt").unlink()
    with pytest.raises(UserError, match=r"missing label file SN001_au26.txt"):
        load_dataset("disfa", tmp_path)
    rec = load_dataset("disfa", tmp_path, on_error="skip")
    y, mask = au_targets(rec, (1, 26))
    assert mask[:, 1].sum() == 0  # AU26 uncoded for the whole subject
    np.testing.assert_array_equal(mask[:, 0], [True, True, False])  # frame 3 uncoded for AU1
    np.testing.assert_array_equal(y[:, 0], [0, 1, 0])


def test_disfa_side_file_keeps_coded_intensities(tmp_path, image):
    _disfa(tmp_path, image)
    pd.DataFrame(
        {
            "subject": ["SN001"] * 3,
            "frame": [0, 1, 2],
            "expression": ["neutral", "happiness", "happiness"],
            "AU1_intensity": [9.0, 9.0, 9.0],
            "AU7_intensity": [0.5, 1.5, 2.5],
        }
    ).to_csv(tmp_path / "clef_synth_labels.csv", index=False)
    rec = load_dataset("disfa", tmp_path)
    assert list(rec["AU1_intensity"]) == [0, 2, 5]  # the label files win for coded AUs
    assert list(rec["AU7_intensity"]) == [0.5, 1.5, 2.5]
    assert list(rec["expression"]) == ["neutral", "happiness", "happiness"]
    assert "AU7" not in rec.columns  # DISFA does not code AU7 occurrence
