"""The generic CSV format for users' own data, and its errors."""

import numpy as np
import pytest

from clef.data import load_dataset
from clef.data.records import au_targets
from clef.errors import UserError


def _csv(tmp_path, image, text, images=("a.png", "b.png", "sub/c.png")):
    for name in images:
        image(tmp_path / name)
    path = tmp_path / "mydata.csv"
    path.write_text(text)
    return path


GOOD = (
    "path,subject,activity_text,AU1,AU12,AU12_intensity,expression,split\n"
    "a.png,S1,Watching a funny clip. The target emotion is amusement.,1,0,0.5,Happiness,train\n"
    "b.png,S1,Watching a funny clip. The target emotion is amusement.,9,,,neutral,train\n"
    "sub/c.png,S2,Holding a hand in ice water. The target emotion is pain.,0,1,3,,test\n"
)


def test_generic_csv_loads(tmp_path, image):
    rec = load_dataset("csv", _csv(tmp_path, image, GOOD))
    assert rec["path"].iloc[2] == str(tmp_path / "sub" / "c.png")  # relative to the CSV's folder
    assert rec["activity"].nunique() == 2 and rec["activity"].iloc[0].startswith("Watching")
    assert rec["activity_text"].iloc[2].endswith("pain.")
    y, mask = au_targets(rec, (1, 12))
    np.testing.assert_array_equal(mask, [[True, True], [False, False], [True, True]])  # 9 and empty masked
    np.testing.assert_array_equal(y, [[1, 0], [0, 0], [0, 1]])
    assert list(rec["expression"].fillna("-")) == ["happiness", "neutral", "-"]
    assert rec["split"].tolist() == ["train", "train", "test"] and rec["dataset"].eq("csv").all()
    assert np.isnan(rec["AU12_intensity"].iloc[1]) and rec["AU12_intensity"].iloc[2] == 3


def test_generic_csv_errors(tmp_path, image):
    bad = GOOD.replace("Happiness", "joy")
    with pytest.raises(
        UserError, match=r"mydata.csv, line 2: unknown expression 'joy'; valid: neutral, happiness"
    ):
        load_dataset("csv", _csv(tmp_path, image, bad))
    rec = load_dataset("csv", _csv(tmp_path, image, bad), on_error="skip")
    assert len(rec) == 2 and "line 2" in rec.attrs["skipped"][0]
    with pytest.raises(UserError, match=r"line 1: unknown column 'emotion'; valid: .*expression"):
        load_dataset("csv", _csv(tmp_path, image, "path,emotion\na.png,happy\n"))
    with pytest.raises(UserError, match=r"line 1: column 'AU3' names an unknown AU"):
        load_dataset("csv", _csv(tmp_path, image, "path,AU3\na.png,1\n"))
    with pytest.raises(UserError, match=r"line 3: AU1 '2' is not 0, 1, 9 or empty"):
        load_dataset("csv", _csv(tmp_path, image, "path,AU1\na.png,1\nb.png,2\n"))
    with pytest.raises(UserError, match=r"line 2: expected 3 fields, found 2"):
        load_dataset("csv", _csv(tmp_path, image, "path,subject,AU1\na.png,S1\n"))
    with pytest.raises(UserError, match=r"line 2: image .*missing.png not found"):
        load_dataset("csv", _csv(tmp_path, image, "path\nmissing.png\n"))
    with pytest.raises(UserError, match=r"line 3: activity 'T1' has text 'b' but line 2 gave it 'a'"):
        load_dataset("csv", _csv(tmp_path, image, "path,activity,activity_text\na.png,T1,a\nb.png,T1,b\n"))
    with pytest.raises(UserError, match=r"line 1: missing column\(s\) path"):
        load_dataset("csv", _csv(tmp_path, image, "image,subject\na.png,S1\n"))
    with pytest.raises(UserError, match=r"line 2: split 'training' is not one of train, val, test"):
        load_dataset("csv", _csv(tmp_path, image, "path,split\na.png,training\n"))
