import argparse
import csv
import json

import numpy as np
import pytest
from PIL import Image

from clef.cli import COMMANDS
from clef.commands import prep as prep_command
from clef.errors import UserError
from clef.prep.align import AlignRecipe
from clef.prep.pipeline import MANIFEST_COLUMNS, PrepConfig, run_prep


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def tree(tmp_path, astronaut, lfw):
    """An input folder shaped like a frame tree: one portrait, two frames of a subject, one flat image."""
    root = tmp_path / "frames"
    (root / "S01" / "T1").mkdir(parents=True)
    Image.fromarray(astronaut).save(root / "astro.jpg", quality=95)
    Image.fromarray(lfw[0][0]).save(root / "S01" / "T1" / "0001.png")
    Image.fromarray(lfw[0][1]).save(root / "S01" / "T1" / "0002.png")
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(root / "flat.png")
    return root


def test_run_writes_mirrored_crops_manifest_misses_and_recipe(tree, tmp_path, detector):
    out = tmp_path / "out"
    summary = run_prep(tree, out, PrepConfig(batch_size=3), detector=detector, progress=False)
    assert (summary.items_processed, summary.frames, summary.faces, summary.misses) == (4, 4, 3, 1)
    rows = read_csv(out / "manifest.csv")
    assert list(rows[0]) == MANIFEST_COLUMNS
    assert sorted(r["crop"] for r in rows) == ["S01/T1/0001.jpg", "S01/T1/0002.jpg", "astro.jpg"]
    for r in rows:
        with Image.open(out / r["crop"]) as crop:
            assert crop.size == (224, 224)
        assert float(r["score"]) > 0.9 and r["track_id"] == "0"
    assert read_csv(out / "misses.csv") == [{"source": "flat.png", "frame": "0"}]
    recipe = json.loads((out / "prep_recipe.json").read_text())
    assert recipe["recipe"]["size"] == 224 and recipe["recipe"]["margin"] == AlignRecipe.margin
    assert len(recipe["recipe"]["points"]) == 5 and recipe["detector"]["min_face_size"] == 20.0


def test_second_run_skips_finished_files_and_drops_rows_of_a_crashed_one(tree, tmp_path, detector):
    out = tmp_path / "out"
    config = PrepConfig(batch_size=2)
    run_prep(tree, out, config, detector=detector, progress=False)
    before = (out / "manifest.csv").read_text()
    again = run_prep(tree, out, config, detector=detector, progress=False)
    assert (again.items_already_done, again.items_processed, again.frames) == (4, 0, 0)
    assert (out / "manifest.csv").read_text() == before
    # A crash while writing a new file left one of its rows and a torn line, but no ledger row.
    Image.open(tree / "astro.jpg").save(tree / "new.jpg")
    with open(out / "manifest.csv", "a") as f:
        f.write("new.jpg,0,0,1,2,3,4,0.9,1,1,1,1,1,1,1,1,1,1,new.jpg\nnew.jpg,0,0,1,2")
    third = run_prep(tree, out, config, detector=detector, progress=False)
    assert (third.items_already_done, third.items_processed) == (4, 1)
    rows = read_csv(out / "manifest.csv")
    assert [r["source"] for r in rows].count("new.jpg") == 1 and len(rows) == 4
    assert all(len(r) == len(MANIFEST_COLUMNS) and None not in r.values() for r in rows)


def test_output_folder_inside_the_input_is_refused_before_anything_is_written(tree, detector):
    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    with pytest.raises(UserError, match="is inside the input"):
        run_prep(tree, tree / "aligned", PrepConfig(), detector=detector, progress=False)
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before


def test_resuming_with_other_settings_is_refused(tree, tmp_path, detector):
    out = tmp_path / "out"
    run_prep(tree / "flat.png", out, PrepConfig(), detector=detector, progress=False)
    with pytest.raises(UserError, match="different settings \\(recipe.size 224 -> 112\\)"):
        run_prep(
            tree / "flat.png",
            out,
            PrepConfig(recipe=AlignRecipe(size=112)),
            detector=detector,
            progress=False,
        )


@pytest.fixture()
def truncated(tree):
    data = (tree / "astro.jpg").read_bytes()
    (tree / "S01" / "T1" / "0003.jpg").write_bytes(data[: len(data) // 3])
    return tree / "S01" / "T1" / "0003.jpg"


def test_truncated_jpeg_is_an_error_naming_it(tree, truncated, tmp_path, detector):
    with pytest.raises(UserError, match="cannot read image .*0003.jpg"):
        run_prep(tree, tmp_path / "out", PrepConfig(), detector=detector, progress=False)


def test_truncated_jpeg_is_a_counted_skip_with_on_error_skip(tree, truncated, tmp_path, detector):
    out = tmp_path / "out"
    summary = run_prep(tree, out, PrepConfig(on_error="skip"), detector=detector, progress=False)
    assert [s for s, _ in summary.skipped] == ["S01/T1/0003.jpg"] and summary.items_processed == 4
    assert [r["source"] for r in read_csv(out / "skipped.csv")] == ["S01/T1/0003.jpg"]
    # Not marked done: a later run tries it again (and here skips it again).
    again = run_prep(tree, out, PrepConfig(on_error="skip"), detector=detector, progress=False)
    assert again.items_already_done == 4 and len(again.skipped) == 1


def test_all_faces_on_images_names_crops_per_face(tree, tmp_path, detector):
    out = tmp_path / "out"
    run_prep(tree / "astro.jpg", out, PrepConfig(all_faces=True), detector=detector, progress=False)
    assert [r["crop"] for r in read_csv(out / "manifest.csv")] == ["astro_f0.jpg"]


def test_empty_or_missing_input_is_a_user_error(tmp_path, detector):
    with pytest.raises(UserError, match="does not exist"):
        run_prep(tmp_path / "nope", tmp_path / "out", detector=detector, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images or videos found"):
        run_prep(tmp_path / "empty", tmp_path / "out", detector=detector, progress=False)


def test_cli_end_to_end(tree, truncated, tmp_path, capsys, detector):
    assert COMMANDS["prep"] == "clef.commands.prep"
    parser = argparse.ArgumentParser(prog="clef")
    prep_command.add_parser(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["prep", str(tree), "--out", str(out), "--size", "112", "--format", "png"])
    args.quiet = True
    with pytest.raises(UserError, match="0003.jpg"):
        args.func(args)
    args = parser.parse_args(
        ["prep", str(tree), "--out", str(tmp_path / "out2"), "--size", "112", "--on-error", "skip", "--quiet"]
    )
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "4 files processed" in text and "skipped 1 unreadable" in text and "0003.jpg" in text
    with Image.open(tmp_path / "out2" / "astro.jpg") as crop:
        assert crop.size == (112, 112)
    with pytest.raises(SystemExit):
        parser.parse_args(["prep", str(tree), "--out", str(out), "--on-error", "ignore"])


def test_read_image_handles_greyscale_and_16_bit(tmp_path):
    from clef.prep.sources import read_image

    Image.fromarray(np.full((10, 12), 7, np.uint8)).save(tmp_path / "g8.png")
    Image.fromarray(np.full((10, 12), 65535, np.uint16)).save(tmp_path / "g16.png")
    assert read_image(tmp_path / "g8.png").shape == (10, 12, 3) and read_image(tmp_path / "g8.png").max() == 7
    assert read_image(tmp_path / "g16.png").min() == 255  # full-scale 16-bit is white, not clipped garbage
