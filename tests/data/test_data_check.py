"""`clef data check` end to end on tiny good and broken trees."""

import numpy as np
import pytest
from PIL import Image

from clef import cli


@pytest.fixture(autouse=True)
def only_data_command(monkeypatch):
    # Test this subcommand alone, independent of which other subcommands this branch has.
    monkeypatch.setattr(cli, "COMMANDS", {"data": "clef.commands.data"})


def _bp4d(root, image, rows="0,1,2\n2440,1,0\n2441,9,1\n", subject="F001", task="T1"):
    for frame in (2440, 2441):
        image(root / subject / task / f"{frame}.jpg")
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True, exist_ok=True)
    (occ / f"{subject}_{task}.csv").write_text(rows)


def test_check_good_tree(tmp_path, image, capsys):
    _bp4d(tmp_path, image)
    _bp4d(tmp_path, image, subject="M003", task="T8")
    status = cli.main(["data", "check", "bp4d", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0
    assert "dataset bp4d" in out and "4 images" in out and "subjects: 2  activities: 2" in out
    assert "images per subject" in out and "M003" in out and "folds (train / test)" in out
    # AU1: coded on 2 of 4 frames (9 = uncoded), present on both -> base rate 1.0
    au1 = next(line for line in out.splitlines() if line.startswith("AU1 "))
    assert au1.split() == ["AU1", "2", "2", "2", "1.0"]
    assert "images: 4 of 4 open and verify" in out


def test_check_broken_layout_names_file(tmp_path, image, capsys):
    _bp4d(tmp_path, image, rows="0,1\n2440,1\n2441,7\n")
    status = cli.main(["data", "check", "bp4d", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and "F001_T1.csv, line 3: AU 1 value '7'" in err
    assert cli.main(["data", "check", "bp4d", str(tmp_path / "nowhere")]) == 2
    assert cli.main(["data", "check", "bp5d", str(tmp_path)]) == 2
    assert "valid: affectnet7" in capsys.readouterr().err
    status = cli.main(["data", "check", "bp4d", str(tmp_path), "--on-error", "skip", "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0 and "skipped (--on-error skip): 1" in out and "F001_T1.csv, line 3" in out


def test_check_unreadable_image(tmp_path, image, capsys):
    _bp4d(tmp_path, image)
    broken = tmp_path / "F001" / "T1" / "2441.jpg"
    broken.write_bytes(b"not an image at all")
    status = cli.main(["data", "check", "bp4d", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 1 and "unreadable images: 1" in out and str(broken) in out
    assert cli.main(["data", "check", "bp4d", str(tmp_path), "--no-verify-images"]) == 0
    status = cli.main(["data", "check", "bp4d", str(tmp_path), "--on-error", "skip", "--no-progress"])
    assert status == 0 and "unreadable image" in capsys.readouterr().out


def test_check_truncated_png_and_loader_options(tmp_path, image, capsys):
    labels = tmp_path / "ActionUnit_Labels" / "SN003"
    labels.mkdir(parents=True)
    for au in (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26):
        (labels / f"SN003_au{au}.txt").write_text("1,3\n2,0\n")
    for i in (1, 2):
        image(tmp_path / "SN003" / f"{i}.png", size=(64, 64))
    status = cli.main(["data", "check", "disfa", str(tmp_path), "-o", "first_frame=1", "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0 and "2 images" in out and "3" in out  # SN003 is in part 3
    path = tmp_path / "SN003" / "2.png"
    path.write_bytes(path.read_bytes()[:-30])  # cut the file short
    assert cli.main(["data", "check", "disfa", str(tmp_path), "-o", "first_frame=1", "--no-progress"]) == 1
    assert str(path) in capsys.readouterr().out
    assert cli.main(["data", "check", "disfa", str(tmp_path), "-o", "frist_frame=1"]) == 2
    assert "has no option frist_frame; valid: on_error, first_frame" in capsys.readouterr().err


def test_check_generic_csv_reports_subject_leak(tmp_path, image, capsys):
    for name in ("a.png", "b.png"):
        image(tmp_path / name)
    (tmp_path / "labels.csv").write_text(
        "path,subject,split,expression\na.png,S1,train,fear\nb.png,S1,test,anger\n"
    )
    status = cli.main(["data", "check", "csv", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 1 and "subject S1 is in both the train and the test split" in out
    assert "expressions" in out and "fear" in out


def test_check_truncated_jpeg(tmp_path, image, capsys):
    _bp4d(tmp_path, image)
    path = tmp_path / "F001" / "T1" / "2440.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut short: headers intact, end-of-image marker gone
    assert cli.main(["data", "check", "bp4d", str(tmp_path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert str(path) in out and "end-of-image marker missing" in out
