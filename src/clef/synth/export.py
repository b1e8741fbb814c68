"""Write the built-in world to disk in the real datasets' layouts (docs/datasets.md).

- lab   -> BP4D layout: ``<subject>/<task>/<frame>.jpg`` and ``AUCoding/AU_OCC/<subject>_<task>.csv``
  (12 BP4D AUs, 1/0, with stretches left uncoded as 9);
- disfa -> DISFA layout: ``<subject>/<i>.png`` (0-based) and
  ``ActionUnit_Labels/<subject>/<subject>_au<N>.txt`` (``frameIdx,intensity``, 1-based, 12 AUs);
- wild  -> RAF-DB layout: ``basic/EmoLabel/list_patition_label.txt`` and ``basic/Image/aligned/``.

Each root also gets :data:`SIDE_FILE`, carrying what the real formats cannot: the intensities of all
17 AUs and the expression shown at every frame. AU levels are FACS-like integers: the rendered
continuous intensity rounded to 0-5; an AU *occurs* at level >= 1 (A, trace).

Rendering runs in ``workers`` processes, one video (or a block of wild images) per task. Every task
draws from its own random stream, so files are byte-identical for any number of workers.
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import asdict
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from clef import __version__
from clef.data.bp4d import SIDE_FILE
from clef.labels import ALL_AUS, BP4D_AUS, DISFA_CODED_AUS, RAFDB_CLASSES, au_intensity_column
from clef.synth.render import encode_jpeg, render_face
from clef.synth.world import (
    ACTIVITIES,
    Video,
    WorldConfig,
    disfa_subjects,
    lab_subjects,
    make_video,
    make_wild_image,
)

DOMAINS = ("lab", "disfa", "wild")
DOMAIN_FOLDERS = {"lab": "bp4d", "disfa": "disfa", "wild": "rafdb"}
_WILD_BLOCK = 250


def au_levels(au: np.ndarray) -> np.ndarray:
    """FACS-like integer levels 0-5 of continuous intensities (any shape)."""
    return np.clip(np.floor(au + 0.5), 0, 5).astype(np.int64)


def render_video(video: Video, size: int) -> list[np.ndarray]:
    """Pixels of every frame of ``video`` (uint8 arrays), sensor noise from the video's own stream."""
    images = []
    for t in range(len(video.frames)):
        rng = np.random.default_rng([*video.seed_key, 2, t])
        images.append(
            render_face(
                video.subject.identity, video.au[t], video.nuisance[t], size, video.unilateral[t], rng
            )
        )
    return images


def _save(path: Path, image: np.ndarray, quality: int, png: bool = False) -> None:
    data = encode_jpeg(image, quality)
    if png:  # PNG frames still carry the camera's compression artefacts
        buffer = BytesIO()
        Image.open(BytesIO(data)).save(buffer, format="PNG")
        data = buffer.getvalue()
    path.write_bytes(data)


def _lab_task(job: tuple[WorldConfig, int, int, str]) -> dict:
    config, subject_index, activity_index, out = job
    subject = subjects_cached(config, "lab")[subject_index]
    video = make_video(config, subject, subject_index, ACTIVITIES[activity_index], config.frames_per_video)
    folder = Path(out) / subject.sid / video.activity
    folder.mkdir(parents=True, exist_ok=True)
    for frame, image, nuisance in zip(
        video.frames, render_video(video, config.size), video.nuisance, strict=True
    ):
        _save(folder / f"{frame}.jpg", image, nuisance.jpeg_quality)
    return _labels(video)


def _disfa_task(job: tuple[WorldConfig, int, str]) -> dict:
    config, subject_index, out = job
    subject = subjects_cached(config, "disfa")[subject_index]
    video = make_video(config, subject, subject_index, None, config.disfa_frames, domain="disfa")
    folder = Path(out) / subject.sid
    folder.mkdir(parents=True, exist_ok=True)
    for frame, image, nuisance in zip(
        video.frames, render_video(video, config.size), video.nuisance, strict=True
    ):
        _save(folder / f"{frame}.png", image, nuisance.jpeg_quality, png=True)
    return _labels(video)


def _wild_task(job: tuple[WorldConfig, int, int, str]) -> list[dict]:
    config, start, stop, out = job
    folder = Path(out) / "basic" / "Image" / "aligned"
    rows = []
    for index in range(start, stop):
        item = make_wild_image(config, index)
        rng = np.random.default_rng([*item.seed_key, 2])
        image = render_face(item.identity, item.au, item.nuisance, config.size, item.unilateral, rng)
        _save(folder / f"{item.name}_aligned.jpg", image, item.nuisance.jpeg_quality)
        rows.append({"image": item.name, "label": item.label, "expression": item.expression, "au": item.au})
    return rows


_SUBJECT_CACHE: dict[tuple[WorldConfig, str], list] = {}


def subjects_cached(config: WorldConfig, domain: str) -> list:
    """Subjects of a video domain, built once per process (workers render many videos each)."""
    if (config, domain) not in _SUBJECT_CACHE:
        build = lab_subjects if domain == "lab" else disfa_subjects
        _SUBJECT_CACHE[(config, domain)] = build(config)
    return _SUBJECT_CACHE[(config, domain)]


def _labels(video: Video) -> dict:
    return {
        "subject": video.subject.sid,
        "activity": video.activity,
        "frames": video.frames,
        "au": video.au,
        "expression": video.expression,
        "uncoded": video.uncoded,
    }


def _run(task, jobs: list, workers: int, desc: str, progress: bool) -> list:
    """Run ``task`` over ``jobs`` in ``workers`` processes, results in job order."""
    bar = tqdm(total=len(jobs), desc=desc, unit="task", disable=not progress, leave=False)
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(task(job))
            bar.update()
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = []
            for result in pool.imap(task, jobs):
                results.append(result)
                bar.update()
    bar.close()
    return results


def write_lab(config: WorldConfig, out: Path, workers: int = 2, progress: bool = True) -> int:
    """Write the lab domain in BP4D layout under ``out``; returns the number of frames."""
    jobs = [(config, s, a, str(out)) for s in range(config.lab_subjects) for a in range(len(ACTIVITIES))]
    results = _run(_lab_task, jobs, workers, "lab videos (BP4D layout)", progress)
    occ = out / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True, exist_ok=True)
    columns = [ALL_AUS.index(a) for a in BP4D_AUS]
    for r in results:
        codes = (au_levels(r["au"][:, columns]) >= 1).astype(np.int64)
        codes[r["uncoded"][:, columns]] = 9
        table = pd.DataFrame(codes, columns=[str(a) for a in BP4D_AUS])
        table.insert(0, "0", r["frames"])
        table.to_csv(occ / f"{r['subject']}_{r['activity']}.csv", index=False)
    _write_side_file(out, results, keys=("subject", "activity"))
    return sum(len(r["frames"]) for r in results)


def write_disfa(config: WorldConfig, out: Path, workers: int = 2, progress: bool = True) -> int:
    """Write the DISFA-like domain (left camera) under ``out``; returns the number of frames."""
    jobs = [(config, s, str(out)) for s in range(config.disfa_subjects)]
    results = _run(_disfa_task, jobs, workers, "DISFA-like videos", progress)
    for r in results:
        folder = out / "ActionUnit_Labels" / r["subject"]
        folder.mkdir(parents=True, exist_ok=True)
        levels = au_levels(r["au"])
        for au in DISFA_CODED_AUS:
            lines = [f"{i + 1},{level}" for i, level in enumerate(levels[:, ALL_AUS.index(au)])]
            (folder / f"{r['subject']}_au{au}.txt").write_text("\n".join(lines) + "\n")
    _write_side_file(out, results, keys=("subject",))
    return sum(len(r["frames"]) for r in results)


def write_wild(config: WorldConfig, out: Path, workers: int = 2, progress: bool = True) -> int:
    """Write the wild domain in RAF-DB layout under ``out``; returns the number of images."""
    (out / "basic" / "Image" / "aligned").mkdir(parents=True, exist_ok=True)
    (out / "basic" / "EmoLabel").mkdir(parents=True, exist_ok=True)
    bounds = range(0, config.wild_images, _WILD_BLOCK)
    jobs = [(config, s, min(s + _WILD_BLOCK, config.wild_images), str(out)) for s in bounds]
    rows = [
        row
        for block in _run(_wild_task, jobs, workers, "wild images (RAF-DB layout)", progress)
        for row in block
    ]
    lines = [f"{r['image']}.jpg {RAFDB_CLASSES.index(r['label']) + 1}" for r in rows]
    (out / "basic" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    side = pd.DataFrame({"image": [r["image"] for r in rows], "expression": [r["expression"] for r in rows]})
    intensities = np.stack([r["au"] for r in rows]) if rows else np.zeros((0, len(ALL_AUS)))
    for j, au in enumerate(ALL_AUS):
        side[au_intensity_column(au)] = np.round(intensities[:, j], 3)
    side.to_csv(out / "basic" / SIDE_FILE, index=False)
    return len(rows)


def _write_side_file(out: Path, results: list[dict], keys: tuple[str, ...]) -> None:
    tables = []
    for r in results:
        table = pd.DataFrame({k: r[k] for k in keys} | {"frame": r["frames"], "expression": r["expression"]})
        for j, au in enumerate(ALL_AUS):
            table[au_intensity_column(au)] = np.round(r["au"][:, j], 3)
        tables.append(table)
    pd.concat(tables, ignore_index=True).to_csv(out / SIDE_FILE, index=False)


WRITERS = {"lab": write_lab, "disfa": write_disfa, "wild": write_wild}


def write_world(
    config: WorldConfig,
    out: Path,
    domains: tuple[str, ...] = DOMAINS,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, int]:
    """Write the requested domains under ``out/<bp4d|disfa|rafdb>`` and ``out/world.json``.

    Returns the number of images written per domain.
    """
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for domain in domains:
        counts[domain] = WRITERS[domain](config, out / DOMAIN_FOLDERS[domain], workers, progress)
    manifest = {"clef_version": __version__, "config": asdict(config), "domains": counts}
    (out / "world.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return counts
