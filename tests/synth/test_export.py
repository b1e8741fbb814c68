"""The world written in the real layouts: determinism, round trip through the loaders, CLI errors."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clef.cli import main
from clef.data import load_dataset
from clef.data.records import au_targets
from clef.labels import ALL_AUS, BP4D_AUS, au_intensity_column
from clef.synth.export import au_levels, write_world
from clef.synth.world import WorldConfig

TINY = WorldConfig(
    seed=3,
    lab_subjects=3,
    frames_per_video=16,
    disfa_subjects=2,
    disfa_frames=12,
    wild_images=30,
    uncoded_rate=0.2,
)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world(TINY, out, workers=1, progress=False)
    return out


def test_parallel_rendering_is_byte_identical(world, tmp_path):
    write_world(TINY, tmp_path, workers=2, progress=False)
    first, second = _digest(world), _digest(tmp_path)
    assert len(first) > 3 * 8 * 16 and first == second


def test_bp4d_round_trip_keeps_every_label(world):
    records = load_dataset("bp4d", world / "bp4d")
    assert len(records) == 3 * 8 * 16
    assert set(records["activity"]) == {f"T{i}" for i in range(1, 9)}
    side = pd.read_csv(world / "bp4d" / "clef_synth_labels.csv")
    assert len(side) == len(records)
    targets, mask = au_targets(records, BP4D_AUS)
    intensities = records[[au_intensity_column(a) for a in BP4D_AUS]].to_numpy()
    expected = (au_levels(intensities) >= 1).astype(np.float32)
    np.testing.assert_array_equal(targets[mask], expected[mask])  # every coded label survives
    assert 0 < (~mask).mean() < 0.5  # some frames were left uncoded (9) and stay masked
    csv_values = np.concatenate(
        [
            pd.read_csv(p).iloc[:, 1:].to_numpy().ravel()
            for p in (world / "bp4d/AUCoding/AU_OCC").glob("*.csv")
        ]
    )
    assert (csv_values == 9).sum() == (~mask).sum()
    assert records["expression"].notna().all()
    assert set(records["fold"]) == {1, 2, 3}


def test_rafdb_round_trip(world):
    records = load_dataset("rafdb", world / "rafdb")
    assert len(records) == 30
    assert set(records["split"]) == {"train", "test"}
    labels = open(world / "rafdb/basic/EmoLabel/list_patition_label.txt").read().split()
    assert len(labels) == 60
    assert records[au_intensity_column(12)].notna().all()


def test_disfa_files(world):
    labels = world / "disfa" / "ActionUnit_Labels"
    subjects = sorted(p.name for p in labels.iterdir())
    assert len(subjects) == 2
    lines = (labels / subjects[0] / f"{subjects[0]}_au12.txt").read_text().split()
    assert lines[0].startswith("1,") and len(lines) == 12  # 1-based frame index
    assert sorted(int(p.stem) for p in (world / "disfa" / subjects[0]).glob("*.png")) == list(range(12))
    side = pd.read_csv(world / "disfa" / "clef_synth_labels.csv")
    levels = au_levels(side.loc[side["subject"] == subjects[0], au_intensity_column(12)].to_numpy())
    assert [int(line.split(",")[1]) for line in lines] == levels.tolist()
    records = load_dataset("disfa", world / "disfa")  # round trip: present = level >= 2
    assert len(records) == 2 * 12 and records["expression"].notna().all()
    first = records[records["subject"] == subjects[0]].sort_values("frame")
    np.testing.assert_array_equal(first["AU12"].to_numpy(), (levels >= 2).astype(float))


def test_levels_round_to_facs_grades():
    assert au_levels(np.array([0.0, 0.49, 0.5, 2.4, 4.9, 5.0])).tolist() == [0, 0, 1, 2, 5, 5]
    assert len(ALL_AUS) == 17


@pytest.mark.parametrize(
    "argv, message",
    [
        (["synth", "--out", "{tmp}/w", "--size", "8"], "must be at least 16"),
        (["synth", "--out", "{tmp}/w", "--subjects", "-2"], "must be at least 1"),
        (["synth", "--out", "{tmp}/w", "--domains", "moon"], "unknown domain moon; valid: lab, disfa, wild"),
        (["synth", "--out", "{tmp}/file.txt/w"], "is a file, not a folder"),
        (["synth", "--out", "{tmp}/w", "--subjects", "42"], "at most 41"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, argv, message):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1 and err.startswith("clef")  # one line, no traceback


def test_cli_renders_a_tiny_world(tmp_path, capsys):
    code = main(
        [
            "synth",
            "--out",
            str(tmp_path),
            "--subjects",
            "2",
            "--frames",
            "4",
            "--disfa-subjects",
            "1",
            "--disfa-frames",
            "4",
            "--wild-images",
            "6",
            "--quiet",
            "--workers",
            "1",
        ]
    )
    assert code == 0
    assert (tmp_path / "gallery.png").is_file() and (tmp_path / "world.json").is_file()
    assert "rendered 74 images" in capsys.readouterr().out
