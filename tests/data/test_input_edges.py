"""Bad label files at the loaders' edge: repeated and conflicting rows, text that is not UTF-8,
frame numbers that are not whole numbers, AU columns that differ between files, stray images.

Each refusal is checked through `clef data check` (exit status 2, one stderr line naming the file and
line) and, for ``--on-error skip``, through the loader (what is kept, what is counted).
"""

from pathlib import Path

import pytest

from clef import cli
from clef.data import load_dataset
from clef.labels import DISFA_CODED_AUS

FER_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
)


@pytest.fixture(autouse=True)
def only_data_command(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", {"data": "clef.commands.data"})


def refused(capsys, dataset: str, root: Path, *needles: str, options=()) -> str:
    """Run `clef data check`; assert exit 2 and exactly one stderr line holding every needle."""
    status = cli.main(["data", "check", dataset, str(root), "--no-progress", *options])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("clef: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------- trees
def bp4d(root: Path, image, rows: str, subject="F001", task="T1", frames=(1, 2, 3)) -> Path:
    for frame in frames:
        image(root / subject / task / f"{frame}.jpg")
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True, exist_ok=True)
    path = occ / f"{subject}_{task}.csv"
    path.write_text(rows)
    return path


def rafdb(root: Path, image, lines: str, names=("train_00001", "train_00002", "test_0001")) -> Path:
    label = root / "basic" / "EmoLabel" / "list_patition_label.txt"
    label.parent.mkdir(parents=True, exist_ok=True)
    label.write_text(lines)
    for name in names:
        image(root / "basic" / "Image" / "aligned" / f"{name}_aligned.jpg")
    return label


def generic(root: Path, image, text: str) -> Path:
    for name in ("a.png", "b.png", "c.png"):
        image(root / name)
    path = root / "labels.csv"
    path.write_text(text)
    return path


def disfa(root: Path, image, au1: str = "1,0\n2,3\n3,1\n", frames=(0, 1, 2)) -> Path:
    labels = root / "ActionUnit_Labels" / "SN001"
    labels.mkdir(parents=True, exist_ok=True)
    for au in DISFA_CODED_AUS:
        (labels / f"SN001_au{au}.txt").write_text(au1 if au == 1 else "1,0\n2,1\n3,4\n")
    for frame in frames:
        image(root / "SN001" / f"{frame}.png")
    return labels / "SN001_au1.txt"


def ferplus(root: Path, image, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for usage, name in (("FER2013Train", "fer0000000.png"), ("FER2013Train", "fer0000001.png")):
        image(root / usage / name)
    image(root / "FER2013Test" / "fer0000002.png")
    path = root / "fer2013new.csv"
    path.write_text(FER_HEADER + "".join(r + "\n" for r in rows))
    return path


def affectnet(root: Path, image, train: list[tuple[str, int]], val: list[tuple[str, int]]) -> Path:
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    for file_name, rows in (("training.csv", train), ("validation.csv", val)):
        lines = []
        for rel, code in rows:
            image(root / "Manually_Annotated_Images" / rel)
            lines.append(f"{rel},0,0,8,8,,{code},0.1,0.2\n")
        (lists / file_name).write_text(AFFECTNET_HEADER + "".join(lines))
    return lists


HAPPY = "0,10,0,0,0,0,0,0,0,0"
SAD = "0,0,0,10,0,0,0,0,0,0"


# ----------------------------------------------------------------------------- repeated rows: BP4D
def test_bp4d_identical_and_conflicting_frames(tmp_path, image, capsys):
    csv = bp4d(tmp_path / "same", image, "0,1,2\n1,1,0\n2,0,1\n1,1,0\n")
    refused(capsys, "bp4d", tmp_path / "same", f"{csv}, line 4: frame 1 repeats line 2")
    records = load_dataset("bp4d", tmp_path / "same", on_error="skip")
    assert list(records["frame"]) == [1, 2] and records["AU1"].tolist() == [1.0, 0.0]  # the first is kept
    assert records.attrs["skipped"] == [f"{csv}, line 4: frame 1 repeats line 2"]

    csv = bp4d(tmp_path / "other", image, "0,1,2\n1,1,0\n2,0,1\n1,0,0\n")
    refused(capsys, "bp4d", tmp_path / "other", f"{csv}, line 4: frame 1 is also on line 2", "AU1 '1' there")
    records = load_dataset("bp4d", tmp_path / "other", on_error="skip")
    assert list(records["frame"]) == [2]  # no telling which labels of frame 1 are right: both rows go
    assert [m.split(": ")[0] for m in records.attrs["skipped"]] == [f"{csv}, line 4", f"{csv}, line 2"]


def test_bp4dplus_shares_the_repeat_check(tmp_path, image, capsys):
    for subject in ("F001", "F002", "M001"):
        csv = bp4d(tmp_path, image, "0,1\n1,1\n2,0\n" + ("2,1\n" if subject == "M001" else ""), subject)
    refused(capsys, "bp4dplus", tmp_path, f"{csv}, line 4: frame 2 is also on line 3 with other labels")


def test_bp4d_file_without_an_au_column_the_others_have(tmp_path, image, capsys):
    bp4d(tmp_path, image, "0,1,2\n1,1,0\n")
    bp4d(tmp_path, image, "0,1,2\n1,0,0\n", subject="F002")
    odd = bp4d(tmp_path, image, "0,1\n1,1\n", subject="M001")
    refused(capsys, "bp4d", tmp_path, f"{odd}, line 1: no column for AU 2, unlike F001_T1.csv")
    records = load_dataset("bp4d", tmp_path, on_error="skip")
    assert sorted(set(records["subject"])) == ["F001", "F002"]  # never a silently uncoded AU2
    assert len(records.attrs["skipped"]) == 1


def test_bp4d_frame_numbers_must_be_whole_numbers(tmp_path, image, capsys):
    csv = bp4d(tmp_path / "column", image, "0,1\n1,1\n2.5,0\n")
    refused(capsys, "bp4d", tmp_path / "column", f"{csv}, line 3: frame number '2.5' is not a whole number")
    bp4d(tmp_path / "stem", image, "0,1\n1,1\n")
    image(tmp_path / "stem" / "F001" / "T1" / "2.5.jpg")
    refused(capsys, "bp4d", tmp_path / "stem", "F001/T1/2.5.jpg: image file name is not a frame number")
    bp4d(tmp_path / "padded", image, "0,1\n1,1\n2,0\n")
    image(tmp_path / "padded" / "F001" / "T1" / "001.jpg")
    refused(capsys, "bp4d", tmp_path / "padded", "frame 1 has two images (001.jpg and 1.jpg)")
    records = load_dataset("bp4d", tmp_path / "padded", on_error="skip")
    assert list(records["frame"]) == [2]  # frame 1 has no trustworthy image: it is left out
    assert [m.split(": ", 1)[1][:24] for m in records.attrs["skipped"]] == [
        "frame 1 has two images (",
        "image for frame 1 not fo",
    ]


def test_bp4d_hidden_files_in_frame_folders_are_not_looked_at(tmp_path, image):
    bp4d(tmp_path, image, "0,1\n1,1\n")
    (tmp_path / "F001" / "T1" / "._1.jpg").write_bytes(b"macOS resource fork")
    assert len(load_dataset("bp4d", tmp_path)) == 1


# --------------------------------------------------------------------------- repeated rows: others
def test_rafdb_identical_and_conflicting_images(tmp_path, image, capsys):
    label = rafdb(tmp_path / "same", image, "train_00001.jpg 1\ntrain_00002.jpg 4\ntrain_00001.jpg 1\n")
    refused(capsys, "rafdb", tmp_path / "same", f"{label}, line 3: image train_00001 repeats line 1")
    assert len(load_dataset("rafdb", tmp_path / "same", on_error="skip")) == 2
    label = rafdb(tmp_path / "other", image, "train_00001.jpg 1\ntrain_00002.jpg 4\ntrain_00001.jpg 5\n")
    refused(
        capsys,
        "rafdb",
        tmp_path / "other",
        f"{label}, line 3: image train_00001 is also on line 1 with other labels",
        "'1 (surprise)' there, '5 (sadness)' here",
    )
    records = load_dataset("rafdb", tmp_path / "other", on_error="skip")
    assert list(records["expression"]) == ["happiness"] and len(records.attrs["skipped"]) == 2


def test_generic_csv_repeats_by_image_file(tmp_path, image, capsys):
    csv = generic(
        tmp_path / "same", image, "path,AU1,expression\na.png,9,Happiness\nb.png,0,\n./a.png,,happiness\n"
    )
    # "./a.png" is a.png, and 9 / empty and Happiness / happiness read the same: an identical repeat.
    refused(capsys, "csv", tmp_path / "same", f"{csv}, line 4: image a.png repeats line 2")
    assert len(load_dataset("csv", tmp_path / "same", on_error="skip")) == 2
    csv = generic(
        tmp_path / "other", image, "path,AU1,expression\na.png,1,happiness\nb.png,0,\na.png,1,sadness\n"
    )
    refused(capsys, "csv", tmp_path / "other", f"{csv}, line 4: image a.png is also on line 2", "expression")
    records = load_dataset("csv", tmp_path / "other", on_error="skip")
    assert [Path(p).name for p in records["path"]] == ["b.png"]
    csv = generic(tmp_path / "frame", image, "path,frame\na.png,12.5\n")
    refused(capsys, "csv", tmp_path / "frame", f"{csv}, line 2: frame '12.5' is not a non-negative integer")


def test_disfa_repeated_frames_and_label_files(tmp_path, image, capsys):
    txt = disfa(tmp_path / "same", image, au1="1,0\n2,3\n2,3\n3,1\n")
    refused(capsys, "disfa", tmp_path / "same", f"{txt}, line 3: frame 2 repeats line 2")
    assert load_dataset("disfa", tmp_path / "same", on_error="skip")["AU1_intensity"].tolist() == [0, 3, 1]
    txt = disfa(tmp_path / "other", image, au1="1,0\n2,3\n2,4\n3,1\n")
    refused(
        capsys, "disfa", tmp_path / "other", f"{txt}, line 3: frame 2 is also on line 2", "(3 there, 4 here)"
    )
    records = load_dataset("disfa", tmp_path / "other", on_error="skip")
    au1 = records["AU1_intensity"].tolist()
    assert au1[0] == 0 and au1[2] == 1 and au1[1] != au1[1]  # frame 2 is uncoded (NaN) for AU1
    txt = disfa(tmp_path / "two", image)
    (txt.parent / "SN001_AU01.txt").write_text("1,5\n2,5\n3,5\n")
    refused(capsys, "disfa", tmp_path / "two", "a second label file for AU1")
    txt = disfa(tmp_path / "frac", image, au1="1,0\n2.5,3\n")
    refused(capsys, "disfa", tmp_path / "frac", f"{txt}, line 2: expected 'frameIdx,intensity' (integers)")
    txt = disfa(tmp_path / "empty", image, au1="")
    refused(capsys, "disfa", tmp_path / "empty", f"{txt}: the file is empty")


def test_ferplus_repeated_image_names(tmp_path, image, capsys):
    rows = [f"Training,fer0000000.png,{HAPPY}", f"Training,fer0000001.png,{SAD}"]
    csv = ferplus(tmp_path / "same", image, [*rows, f"Training,fer0000000.png,{HAPPY}"])
    refused(capsys, "ferplus", tmp_path / "same", f"{csv}, line 4: image fer0000000.png repeats line 2")
    csv = ferplus(tmp_path / "other", image, [*rows, f"Training,fer0000000.png,{SAD}"])
    refused(capsys, "ferplus", tmp_path / "other", f"{csv}, line 4: image fer0000000.png is also on line 2")
    # One FER2013 number under two usages would put one face in two splits.
    csv = ferplus(tmp_path / "usages", image, [*rows, f"PrivateTest,fer0000000.png,{HAPPY}"])
    refused(capsys, "ferplus", tmp_path / "usages", "Usage 'Training' there, 'PrivateTest' here")
    records = load_dataset("ferplus", tmp_path / "usages", on_error="skip")
    assert list(records["expression"]) == ["sadness"] and len(records.attrs["skipped"]) == 2
    # Empty names (not a face) are not images, so they never repeat one another.
    ferplus(tmp_path / "noface", image, [f"Training,,{HAPPY}", f"Training,,{HAPPY}", *rows])
    assert len(load_dataset("ferplus", tmp_path / "noface")) == 2


def test_affectnet_repeats_within_and_across_files(tmp_path, image, capsys):
    lists = affectnet(
        tmp_path / "same", image, [("1/a.jpg", 1), ("1/b.jpg", 2), ("1/a.jpg", 1)], [("2/c.jpg", 3)]
    )
    refused(
        capsys,
        "affectnet8",
        tmp_path / "same",
        f"{lists / 'training.csv'}, line 4: image 1/a.jpg repeats line 2",
    )
    lists = affectnet(
        tmp_path / "leak", image, [("1/a.jpg", 1), ("1/b.jpg", 2)], [("1/a.jpg", 1), ("2/c.jpg", 3)]
    )
    line = refused(
        capsys, "affectnet8", tmp_path / "leak", f"{lists / 'validation.csv'}, line 2: image 1/a.jpg"
    )
    assert f"{lists / 'training.csv'}, line 2" in line and "split 'train' there, 'test' here" in line
    records = load_dataset("affectnet8", tmp_path / "leak", on_error="skip")
    assert sorted(Path(p).name for p in records["path"]) == ["b.jpg", "c.jpg"]
    affectnet(tmp_path / "other", image, [("1/a.jpg", 1), ("1/b.jpg", 2), ("1/a.jpg", 4)], [("2/c.jpg", 3)])
    refused(capsys, "affectnet7", tmp_path / "other", "image 1/a.jpg is also on line 2 with other labels")


# ------------------------------------------------------------------------------------ not UTF-8
LATIN1 = "caf\xe9".encode("latin-1")


def test_label_files_that_are_not_utf8_name_the_line(tmp_path, image, capsys):
    csv = bp4d(tmp_path / "bp4d", image, "0,1\n1,1\n")
    csv.write_bytes(b"0,1\n1,1\n2," + LATIN1 + b"\n")
    refused(capsys, "bp4d", tmp_path / "bp4d", f"{csv}, line 3: not UTF-8 text (byte 0xe9, column 6)")
    label = rafdb(tmp_path / "raf", image, "")
    label.write_bytes(b"train_00001.jpg 1\n" + LATIN1 + b" 2\n")
    refused(capsys, "rafdb", tmp_path / "raf", f"{label}, line 2: not UTF-8 text (byte 0xe9, column 4)")
    csv = generic(tmp_path / "csv", image, "")
    csv.write_bytes(b"path,subject\na.png," + LATIN1 + b"\n")
    refused(capsys, "csv", tmp_path / "csv", f"{csv}, line 2: not UTF-8 text (byte 0xe9, column 10)")
    txt = disfa(tmp_path / "disfa", image)
    txt.write_bytes(b"1,0\n2,3" + b"\xff\n")
    refused(capsys, "disfa", tmp_path / "disfa", f"{txt}, line 2: not UTF-8 text (byte 0xff, column 4)")
    csv = ferplus(tmp_path / "fer", image, [])
    csv.write_bytes(FER_HEADER.encode() + b"Training,fer0000000.png," + LATIN1 + b"\n")
    refused(capsys, "ferplus", tmp_path / "fer", f"{csv}, line 2: not UTF-8 text")
    lists = affectnet(tmp_path / "aff", image, [("1/a.jpg", 1)], [("2/c.jpg", 3)])
    (lists / "validation.csv").write_bytes(AFFECTNET_HEADER.encode() + LATIN1 + b",0,0,8,8,,3,0,0\n")
    refused(capsys, "affectnet8", tmp_path / "aff", f"{lists / 'validation.csv'}, line 2: not UTF-8 text")


def test_fold_files_that_are_not_utf8_or_repeat_a_part(tmp_path, image, capsys):
    for subject in ("F001", "F002", "M001"):
        bp4d(tmp_path / "data", image, "0,1\n1,1\n", subject)
    folds = tmp_path / "folds.yaml"
    folds.write_bytes(b"parts:\n  1: [F001, " + LATIN1 + b"]\n")
    options = ("-o", f"folds={folds}")
    refused(capsys, "bp4dplus", tmp_path / "data", f"{folds}, line 2: not UTF-8 text", options=options)
    folds.write_text("parts:\n  1: [F001]\n  2: [F002]\n  1: [M001]\n")  # YAML would keep the last part 1
    refused(
        capsys,
        "bp4dplus",
        tmp_path / "data",
        f"{folds}, line 4: key 1 is given twice (first on line 2)",
        options=options,
    )
    folds = tmp_path / "folds.csv"
    folds.write_bytes(b"subject,part\nF001,1\n" + LATIN1 + b",2\n")
    refused(
        capsys,
        "bp4dplus",
        tmp_path / "data",
        f"{folds}, line 3: not UTF-8 text",
        options=("-o", f"folds={folds}"),
    )


def test_a_byte_order_mark_is_accepted(tmp_path, image):
    csv = generic(tmp_path, image, "")
    csv.write_bytes(b"\xef\xbb\xbfpath,AU1\na.png,1\n")
    assert load_dataset("csv", tmp_path)["AU1"].tolist() == [1.0]
