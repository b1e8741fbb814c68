"""`clef prep` refuses, before writing anything, what would lose or mix up data, and says why.

An output folder equal to or inside the input (crops would be written over, or among, the images they
come from), an input inside the output folder, and resuming a run with other settings (named one by
one, old -> new). Every refusal is one stderr line with exit status 2, and no file changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clef.cli import main


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification time of every file under ``folder`` (relative path -> both)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def refused(capsys, argv: list[str], *needles: str) -> str:
    status = main(argv)
    lines = capsys.readouterr().err.splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("clef: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture()
def frames(tmp_path) -> Path:
    """A frame tree, S01/T1/0001.jpg ..., of flat grey pictures (no face: quick to search)."""
    root = tmp_path / "frames"
    for k in (1, 2):
        path = root / "S01" / "T1" / f"{k:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 60, 3), 100 + k, np.uint8)).save(path)
    return root


def test_output_folder_equal_to_the_input(frames, capsys):
    before = snapshot(frames)
    refused(
        capsys, ["prep", str(frames), "--out", str(frames), "--quiet"], f"--out {frames} is the input folder"
    )
    assert snapshot(frames) == before


@pytest.mark.parametrize("inside", ["aligned", "S01/aligned", "S01/T1"])
def test_output_folder_inside_the_input(frames, capsys, inside):
    before = snapshot(frames)
    out = frames / inside
    refused(
        capsys,
        ["prep", str(frames), "--out", str(out), "--quiet"],
        f"--out {out} is inside the input {frames}",
    )
    assert snapshot(frames) == before and (out.exists() == (inside == "S01/T1"))


def test_output_folder_reached_through_a_symbolic_link(frames, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(frames)
    before = snapshot(frames)
    refused(capsys, ["prep", str(frames), "--out", str(link / "aligned"), "--quiet"], "is inside the input")
    assert snapshot(frames) == before


@pytest.mark.parametrize("which", ["folder", "file"])
def test_input_inside_the_output_folder(frames, capsys, which):
    source = frames / "S01" if which == "folder" else frames / "S01" / "T1" / "0001.jpg"
    before = snapshot(frames)
    refused(
        capsys,
        ["prep", str(source), "--out", str(frames), "--quiet"],
        f"the input {source} is inside the output folder {frames}",
    )
    assert snapshot(frames) == before


def test_sibling_output_folder_is_fine_and_a_resume_with_other_settings_names_them(
    frames, tmp_path, capsys, detector
):
    out = tmp_path / "aligned"
    assert main(["prep", str(frames), "--out", str(out), "--quiet"]) == 0
    assert "2 files processed" in capsys.readouterr().out
    written = snapshot(out)
    refused(
        capsys,
        [
            "prep",
            str(frames),
            "--out",
            str(out),
            "--size",
            "112",
            "--frame-step",
            "2",
            "--format",
            "png",
            "--quiet",
        ],
        f"{out} holds a run made with different settings",
        'recipe.size 224 -> 112; frame_step 1 -> 2; image_format "jpg" -> "png"',
    )
    line = refused(
        capsys, ["prep", str(frames), "--out", str(out), "--margin", "0.5", "--quiet"], "recipe.margin"
    )
    assert "recipe.points" not in line  # the template points follow from the margin: not named
    assert snapshot(out) == written
