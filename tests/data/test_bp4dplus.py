"""BP4D+ loader and fold protocols: user fold files, seeded subject-exclusive folds, save and re-load."""

import pytest

from clef.data import load_dataset
from clef.data.folds import generate_protocol, load_protocol_file, save_protocol, split_fold
from clef.errors import UserError

SUBJECTS = ("F001", "F002", "F003", "F004", "M001", "M002", "M003")


def _bp4dplus(root, image, subjects=SUBJECTS, tasks=("T1", "T6")):
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        for task in tasks:
            for frame in (10, 11):
                image(root / subject / task / f"{frame}.jpg")
            (occ / f"{subject}_{task}.csv").write_text("0,1,12\n10,1,0\n11,9,1\n")


def test_generated_folds_subject_exclusive_deterministic_and_saved(tmp_path, image):
    root = tmp_path / "bp4dplus"
    _bp4dplus(root, image)
    saved = tmp_path / "run"
    saved.mkdir()
    rec = load_dataset("bp4dplus", root, seed=3, save_folds=saved)
    assert set(rec["activity"]) == {"T1", "T6"} and rec["dataset"].eq("bp4dplus").all()
    assert rec.groupby("subject")["fold"].nunique().eq(1).all()  # each subject in one part
    assert sorted(rec.groupby("fold")["subject"].nunique()) == [2, 2, 3]
    protocol = rec.attrs["protocol"]
    for fold in protocol.folds:
        train, test = split_fold(rec, fold, protocol)
        assert not set(train["subject"]) & set(test["subject"]) and len(train) + len(test) == len(rec)
    again = load_dataset("bp4dplus", root, seed=3)
    assert list(again["fold"]) == list(rec["fold"])  # same seed, same folds
    others = {tuple(load_dataset("bp4dplus", root, seed=s)["fold"]) for s in range(6)}
    assert len(others) > 1  # the seed matters
    reloaded = load_dataset("bp4dplus", root, folds=saved / "bp4dplus_folds.yaml", seed=99)
    assert list(reloaded["fold"]) == list(rec["fold"])


def test_generate_protocol_balances_sexes_and_ignores_order():
    subjects = [f"F{i:03d}" for i in range(1, 10)] + [f"M{i:03d}" for i in range(1, 7)]
    a = generate_protocol(subjects, n_parts=3, seed=0)
    b = generate_protocol(list(reversed(subjects)), n_parts=3, seed=0)
    assert a.parts == b.parts
    for part in a.parts.values():
        assert sum(s.startswith("F") for s in part) == 3 and sum(s.startswith("M") for s in part) == 2
    assert a.test_part_of_fold == {1: 3, 2: 2, 3: 1}
    with pytest.raises(UserError, match="cannot deal 2 subjects into 3"):
        generate_protocol(["F001", "M001"], n_parts=3)


def test_user_fold_files(tmp_path, image):
    root = tmp_path / "bp4dplus"
    _bp4dplus(root, image, subjects=("F001", "F002", "M001"))
    fold_csv = tmp_path / "folds.csv"
    fold_csv.write_text("subject,part\nF001,1\nF002,2\n")
    with pytest.raises(UserError, match=r"folds.csv: subject M001 .* not listed in any part"):
        load_dataset("bp4dplus", root, folds=fold_csv)
    rec = load_dataset("bp4dplus", root, folds=fold_csv, on_error="skip")
    assert set(rec["subject"]) == {"F001", "F002"} and len(rec.attrs["skipped"]) == 1
    assert dict(zip(rec["subject"], rec["fold"], strict=True)) == {"F001": 1, "F002": 2}
    fold_csv.write_text("subject,part\nF001,1\nF001,2\n")
    with pytest.raises(UserError, match=r"folds.csv, line 3: subject 'F001' already listed on line 2"):
        load_protocol_file(fold_csv)
    bad_yaml = tmp_path / "folds.yaml"
    bad_yaml.write_text("parts: {1: [F001, M001], 2: [M001]}\n")
    with pytest.raises(UserError, match="subject 'M001' is in parts 1 and 2"):
        load_protocol_file(bad_yaml)
    good = save_protocol(generate_protocol(["F001", "F002", "M001"], n_parts=2, seed=1), tmp_path / "p.yaml")
    assert load_protocol_file(good).parts == generate_protocol(["F001", "F002", "M001"], 2, seed=1).parts


def test_uncoded_tasks_are_masked_frames(tmp_path, image):
    root = tmp_path / "bp4dplus"
    _bp4dplus(root, image, subjects=("F001", "M001", "M002"))
    for frame in (1, 2, 3):
        image(root / "F001" / "T2" / f"{frame}.jpg")
    assert set(load_dataset("bp4dplus", root)["activity"]) == {"T1", "T6"}
    rec = load_dataset("bp4dplus", root, uncoded_tasks=True)
    t2 = rec[rec["activity"] == "T2"]
    assert list(t2["frame"]) == [1, 2, 3] and t2[["AU1", "AU12"]].isna().all().all()
    assert t2["fold"].notna().all() and len(rec) == 12 + 3
