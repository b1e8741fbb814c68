"""FERPlus majority protocol and both image forms (CSV pixels decoded to a cache, and folders)."""

import numpy as np
import pytest
from PIL import Image

from clef.data import load_dataset
from clef.data.ferplus import NOT_FACE, UNKNOWN, majority_vote
from clef.errors import UserError

HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
# (Usage, Image name, votes): the expected outcome is in the comment.
ROWS = [
    ("Training", "fer0000000.png", "0,9,0,0,0,0,0,1,0,0"),  # happiness
    ("Training", "", "0,0,0,0,0,0,0,0,0,10"),  # empty name: not a face, dropped
    ("PublicTest", "fer0000002.png", "5,5,0,0,0,0,0,0,0,0"),  # tie -> unknown, dropped
    ("PrivateTest", "fer0000003.png", "1,1,1,0,0,0,0,0,1,6"),  # NF, dropped
    ("PrivateTest", "fer0000004.png", "1,0,0,0,0,1,1,4,3,0"),  # contempt only after zeroing 1-votes
    ("PublicTest", "fer0000005.png", "2,0,0,0,0,0,0,0,8,0"),  # voted unknown, dropped
]


def test_majority_vote():
    votes = np.array(
        [
            [10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],  # tie: neither is > 50 %
            [4, 3, 1, 1, 1, 0, 0, 0, 0, 0],  # 4/10 fails, but 4/7 after zeroing 1-votes wins
            [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # everything zeroed -> unknown
            [0, 0, 0, 0, 0, 0, 0, 0, 3, 7],  # NF
            [2, 2, 2, 0, 0, 0, 0, 0, 4, 0],  # unknown wins nothing: 4/10 -> unknown
            [0, 0, 0, 0, 0, 0, 3, 0, 0, 0],  # fear
        ]
    )
    assert list(majority_vote(votes)) == [0, UNKNOWN, 0, UNKNOWN, NOT_FACE, UNKNOWN, 6]


def _labels(root, rows=ROWS):
    root.mkdir(parents=True, exist_ok=True)
    (root / "fer2013new.csv").write_text(HEADER + "".join(f"{u},{n},{v}\n" for u, n, v in rows))


def _pixels(root, rows=ROWS):
    lines = ["emotion,pixels,Usage"]
    for i, (usage, _, _) in enumerate(rows):
        lines.append(f"3,{' '.join(str((i * 7 + k) % 256) for k in range(48 * 48))},{usage}")
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")


def test_ferplus_pixel_csv_form(tmp_path):
    root = tmp_path / "ferplus"
    _labels(root)
    _pixels(root)
    cache = tmp_path / "cache"
    rec = load_dataset("ferplus", root, cache_dir=cache)
    assert list(rec["expression"]) == ["happiness", "contempt"]
    assert list(rec["split"]) == ["train", "test"]
    assert rec.attrs["dropped"] == {
        "empty Image name (not a face)": 1,
        "unknown (voted, or no majority)": 2,
        "NF (not a face)": 1,
    }
    assert rec.attrs["classes"][0] == "neutral" and rec.attrs["classes"][7] == "contempt"
    with Image.open(rec["path"].iloc[1]) as img:
        assert img.size == (48, 48) and img.mode == "L"
        assert np.asarray(img)[0, :3].tolist() == [28, 29, 30]  # row 5 of fer2013.csv (i = 4)
    assert rec["path"].iloc[1].endswith("FER2013Test/fer0000004.png")
    (root / "fer2013.csv").unlink()  # the cache is reused: nothing to decode the second time
    assert list(load_dataset("ferplus", root, cache_dir=cache)["path"]) == list(rec["path"])


def test_ferplus_pixel_errors(tmp_path):
    root = tmp_path / "ferplus"
    _labels(root)
    _pixels(root, rows=[(("PublicTest" if i == 4 else u), n, v) for i, (u, n, v) in enumerate(ROWS)])
    with pytest.raises(
        UserError, match=r"fer2013.csv, line 6: Usage 'PublicTest' differs from .*fer2013new.csv, line 6"
    ):
        load_dataset("ferplus", root, cache_dir=tmp_path / "c1")
    _pixels(root, rows=ROWS[:3])
    with pytest.raises(UserError, match="must align row for row"):
        load_dataset("ferplus", root, cache_dir=tmp_path / "c2")
    (root / "fer2013.csv").unlink()
    with pytest.raises(UserError, match="no FERPlus images: expected folders FER2013Train"):
        load_dataset("ferplus", root)


def test_ferplus_folder_form_and_bad_rows(tmp_path, image):
    root = tmp_path / "ferplus"
    _labels(root)
    image(root / "FER2013Train" / "fer0000000.png", size=(48, 48), mode="L")
    with pytest.raises(
        UserError, match=r"fer2013new.csv, line 6: image .*FER2013Test/fer0000004.png not found"
    ):
        load_dataset("ferplus", root)
    image(root / "FER2013Test" / "fer0000004.png", size=(48, 48), mode="L")
    rec = load_dataset("ferplus", root)
    assert rec["path"].iloc[0] == str(root / "FER2013Train" / "fer0000000.png")
    _labels(root, ROWS + [("Training", "fer0000006.png", "0,0,0,0,x,0,0,0,0,0")])
    with pytest.raises(UserError, match=r"fer2013new.csv, line 8: anger vote count 'x' is not an integer"):
        load_dataset("ferplus", root)
    rec = load_dataset("ferplus", root, on_error="skip")
    assert list(rec["expression"]) == ["happiness", "contempt"] and len(rec.attrs["skipped"]) == 1
    (root / "fer2013new.csv").write_text(HEADER + "Train,fer0000000.png,0,9,0,0,0,0,0,1,0,0\n")
    with pytest.raises(
        UserError, match=r"line 2: Usage 'Train' is not one of Training, PublicTest, PrivateTest"
    ):
        load_dataset("ferplus", root)
    (root / "fer2013new.csv").write_text(HEADER + "Training,fer0000000.png,0,9,0\n")
    with pytest.raises(UserError, match=r"line 2: expected 12 fields, found 5"):
        load_dataset("ferplus", root)
