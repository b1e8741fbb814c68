"""Time the dataset loaders on full-size synthetic layouts (empty image files, random labels).

Prints seconds per loader for trees the size of the real datasets: DISFA (27 subjects x 4845
frames x 12 AU files), BP4D (41 subjects x 8 tasks, ~146k coded frames), AffectNet (~290k rows)
and FERPlus (35,887 rows, pixels decoded to PNG on the first load). Image checks are existence
checks here (empty files); ``clef data check`` additionally opens every image.

    python benchmarks/data_loaders.py [--scale 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from clef.data import load_dataset
from clef.data.folds import load_protocol
from clef.labels import BP4D_AUS, DISFA_CODED_AUS


def _touch_frames(folder: Path, numbers) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in numbers:
        (folder / f"{i}.png").touch()


def make_disfa(root: Path, frames: int, rng) -> None:
    for part in load_protocol("disfa").parts.values():
        for subject in part:
            labels = root / "ActionUnit_Labels" / subject
            labels.mkdir(parents=True)
            for au in DISFA_CODED_AUS:
                values = rng.integers(0, 6, frames)
                (labels / f"{subject}_au{au}.txt").write_text(
                    "".join(f"{k + 1},{v}\n" for k, v in enumerate(values))
                )
            _touch_frames(root / subject, range(frames))


def make_bp4d(root: Path, frames: int, rng) -> None:
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True)
    header = "0," + ",".join(str(a) for a in BP4D_AUS) + "\n"
    for part in load_protocol("bp4d").parts.values():
        for subject in part:
            for task in [f"T{i}" for i in range(1, 9)]:
                first = 1000
                codes = rng.choice([0, 1, 9], size=(frames, len(BP4D_AUS)), p=[0.6, 0.3, 0.1])
                rows = [f"{first + k}," + ",".join(map(str, r)) for k, r in enumerate(codes)]
                (occ / f"{subject}_{task}.csv").write_text(header + "\n".join(rows) + "\n")
                folder = root / subject / task
                folder.mkdir(parents=True)
                for k in range(frames):
                    (folder / f"{first + k}.jpg").touch()


def make_affectnet(root: Path, rows: int, rng) -> None:
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    header = (
        "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
        "expression,valence,arousal\n"
    )
    for name, n in (("training.csv", rows), ("validation.csv", 5500)):
        codes = rng.integers(0, 11, n)
        lines = []
        for i, code in enumerate(codes):
            rel = f"{i % 1000}/{name[:3]}{i}.jpg"
            lines.append(f"{rel},0,0,100,100,0;0,{code},0,0\n")
        (lists / name).write_text(header + "".join(lines))
        for i in range(n):
            folder = root / "Manually_Annotated_Images" / str(i % 1000)
            if i < 1000:
                folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name[:3]}{i}.jpg").touch()


def make_ferplus(root: Path, rows: int, rng) -> None:
    root.mkdir(parents=True)
    usage = np.array(["Training", "PublicTest", "PrivateTest"])[rng.integers(0, 3, rows)]
    votes = rng.multinomial(10, [0.3, 0.3, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01], size=rows)
    head = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    (root / "fer2013new.csv").write_text(
        head
        + "".join(
            f"{u},fer{i:07d}.png,{','.join(map(str, v))}\n"
            for i, (u, v) in enumerate(zip(usage, votes, strict=True))
        )
    )
    pixels = " ".join(["128"] * 48 * 48)
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "".join(f"0,{pixels},{u}\n" for u in usage))


def timed(label: str, fn) -> None:
    start = time.perf_counter()
    records = fn()
    print(f"{label:<34} {time.perf_counter() - start:7.2f} s   {len(records):>7} records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real sizes")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_disfa(tmp / "disfa", int(4845 * args.scale), rng)
        timed("disfa (27 x 4845 x 12 AU files)", lambda: load_dataset("disfa", tmp / "disfa"))
        make_bp4d(tmp / "bp4d", int(450 * args.scale), rng)
        timed("bp4d (41 x 8 tasks x 450 frames)", lambda: load_dataset("bp4d", tmp / "bp4d"))
        make_affectnet(tmp / "affectnet", int(287_000 * args.scale), rng)
        timed("affectnet8 (287k + 5.5k rows)", lambda: load_dataset("affectnet8", tmp / "affectnet"))
        make_ferplus(tmp / "ferplus", int(35_887 * args.scale), rng)
        timed("ferplus, first load (decodes PNGs)", lambda: load_dataset("ferplus", tmp / "ferplus"))
        timed("ferplus, second load (cached)", lambda: load_dataset("ferplus", tmp / "ferplus"))


if __name__ == "__main__":
    main()
