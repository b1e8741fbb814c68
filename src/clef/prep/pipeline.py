"""The batched, resumable face-preprocessing run behind `clef prep`.

Output folder layout (crops mirror the input tree, so a dataset loader can be pointed at the output
root instead of the raw one)::

    OUT/prep_recipe.json   recipe (template, margin, size), detector settings, weights origin
    OUT/manifest.csv       one row per saved crop (MANIFEST_COLUMNS)
    OUT/misses.csv         one row per frame where no face was found (source, frame)
    OUT/items.csv          one row per finished input file: the resume ledger
    OUT/skipped.csv        files skipped in the last run with --on-error skip, and why
    OUT/<rel>.jpg          image <rel>: its largest face (``<rel>_f<k>.jpg`` per face with all_faces)
    OUT/<rel>/<frame>.jpg  video <rel>: one crop per frame (``<frame>_t<track>.jpg`` with all_faces)

Resumption: an input file counts as finished only once its manifest and miss rows are flushed to
disk *and* its ledger row follows them. At start, rows of unfinished files (e.g. left by a crash,
including a torn last line) are dropped from the CSVs, and the finished files are skipped. So a
crash loses at most the files in flight, and a re-run never duplicates rows.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from clef.errors import UserError
from clef.prep.align import AlignRecipe, align_faces
from clef.prep.mtcnn import MTCNN, DetectorConfig, Faces, WeightFiles
from clef.prep.nms import box_overlap
from clef.prep.sources import SourceItem, discover, iter_frames, video_frame_count
from clef.textfiles import load_json, not_utf8

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
MANIFEST_COLUMNS = (
    ["source", "frame", "track_id", "x1", "y1", "x2", "y2", "score"]
    + [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in ("x", "y")]
    + ["crop"]
)
MISS_COLUMNS = ["source", "frame"]
ITEM_COLUMNS = ["source", "kind", "frames", "faces", "misses"]
SKIP_COLUMNS = ["source", "error"]
ON_ERROR_CHOICES = ("raise", "skip")
FORMATS = ("jpg", "png")
RECIPE_FILE = "prep_recipe.json"


@dataclass(frozen=True)
class PrepConfig:
    """Settings of one preprocessing run.

    ``all_faces``: keep every face (with a track id in videos) instead of the largest one per frame.
    ``frame_step``: keep every n-th video frame. ``on_error``: ``"raise"`` stops at the first
    unreadable file; ``"skip"`` records it in skipped.csv and goes on. ``track_iou`` /
    ``track_max_gap``: a face continues a track when its box overlaps the track's last box by more
    than ``track_iou`` and the track was seen within ``track_max_gap`` frames.
    """

    recipe: AlignRecipe = field(default_factory=AlignRecipe)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    batch_size: int = 16
    all_faces: bool = False
    frame_step: int = 1
    on_error: str = "raise"
    image_format: str = "jpg"
    jpeg_quality: int = 95
    track_iou: float = 0.3
    track_max_gap: int = 15

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}, got {self.on_error!r}")
        if self.image_format not in FORMATS:
            raise ValueError(f"image_format must be one of {', '.join(FORMATS)}, got {self.image_format!r}")
        if self.batch_size < 1 or self.frame_step < 1:
            raise ValueError("batch_size and frame_step must be at least 1")

    def output_settings(self) -> dict:
        """Everything that changes what is written; a resumed run must match it exactly."""
        return {
            "recipe": self.recipe.to_dict(),
            "detector": asdict(self.detector),
            "all_faces": self.all_faces,
            "frame_step": self.frame_step,
            "image_format": self.image_format,
            "track_iou": self.track_iou,
            "track_max_gap": self.track_max_gap,
        }


@dataclass
class PrepSummary:
    """Counts of one run. ``skipped``: ``(source, error)`` per file skipped with on_error="skip"."""

    items_total: int = 0
    items_already_done: int = 0
    items_processed: int = 0
    frames: int = 0
    faces: int = 0
    misses: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class IoUTracker:
    """Greedy IoU tracker: links each face to the live track whose last box overlaps it most.

    Track ids start at 0 and are never reused within a video. ``update`` must see frames in order.
    """

    def __init__(self, min_iou: float = 0.3, max_gap: int = 15) -> None:
        self.min_iou, self.max_gap = min_iou, max_gap
        self.tracks: dict[int, tuple[torch.Tensor, int]] = {}  # id -> (last box, last frame)
        self.next_id = 0

    def update(self, boxes: torch.Tensor, frame: int) -> list[int]:
        """``boxes``: ``(K, 4)`` of one frame; returns the K track ids."""
        boxes = boxes.detach().float().cpu()
        live = [(tid, box) for tid, (box, seen) in self.tracks.items() if frame - seen <= self.max_gap]
        pairs = []
        for k in range(boxes.shape[0]):
            if live:
                ious = box_overlap(boxes[k], torch.stack([b for _, b in live]))
                pairs += [
                    (float(iou), k, tid)
                    for iou, (tid, _) in zip(ious, live, strict=True)
                    if iou > self.min_iou
                ]
        ids: list[int | None] = [None] * boxes.shape[0]
        used = set()
        for _, k, tid in sorted(pairs, key=lambda p: -p[0]):
            if ids[k] is None and tid not in used:
                ids[k] = tid
                used.add(tid)
        for k in range(boxes.shape[0]):
            if ids[k] is None:
                ids[k] = self.next_id
                self.next_id += 1
            self.tracks[ids[k]] = (boxes[k], frame)
        return ids


class _ItemRun:
    """Rows of one input file, held until the file is finished."""

    def __init__(self, item: SourceItem, tracker: IoUTracker | None) -> None:
        self.item = item
        self.tracker = tracker
        self.manifest: list[list] = []
        self.misses: list[list] = []
        self.frames = 0
        self.error: str | None = None


class _CsvLog:
    """An append-only CSV whose every flush reaches the disk."""

    def __init__(self, path: Path, columns: list[str], keep: Callable[[list[str]], bool] | None) -> None:
        """Open ``path``; when ``keep`` is given, first rewrite it atomically with only the
        well-formed rows that ``keep`` accepts (dropping rows of unfinished items)."""
        self.path = path
        if keep is not None and path.exists():
            rows = _read_rows(path, columns)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(columns)
                writer.writerows(r for r in rows if keep(r))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        fresh = not path.exists()
        self.file = open(path, "a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        if fresh:
            self.writer.writerow(columns)
            self.flush()

    def write(self, rows: list[list]) -> None:
        self.writer.writerows(rows)

    def flush(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _read_rows(path: Path, columns: list[str]) -> list[list[str]]:
    """Well-formed data rows of a CSV written by this module (a torn last line is dropped)."""
    data = path.read_bytes()
    # Cut before decoding: a torn last line may end inside a multi-byte character.
    complete = data[: data.rfind(b"\n") + 1]
    try:
        text = complete.decode("utf-8")
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or rows[0] != columns:
        raise UserError(f"{path} is not a clef prep file (expected columns {','.join(columns)})")
    return [r for r in rows[1:] if len(r) == len(columns)]


def _check_recipe(out: Path, config: PrepConfig, weights: WeightFiles) -> None:
    """Write the run's settings, or check they match the ones of the run being resumed."""
    path = out / RECIPE_FILE
    settings = config.output_settings()
    if path.exists():
        previous = load_json(path)
        if not isinstance(previous, dict):
            raise UserError(f"{path}: not a clef prep recipe (expected a JSON object)")
        changes = setting_changes(previous, json.loads(json.dumps(settings)))
        if changes:
            raise UserError(
                f"{out} holds a run made with different settings ({'; '.join(changes)}); "
                "use a new --out folder or the same settings"
            )
        return
    record = {
        **settings,
        "weights": weights.origin,
        "landmarks": list(LANDMARK_NAMES),
        "note": "crop = similarity transform (least squares) of the 5 MTCNN landmarks onto recipe.points",
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


_ABSENT = object()


def setting_changes(old: dict, new: dict) -> list[str]:
    """``"recipe.size 224 -> 112"`` for every setting of ``new`` whose value in ``old`` differs.

    Nested settings are compared leaf by leaf, named by dotted keys. ``recipe.points`` follows from
    the other recipe values, so it is named only when it alone differs (a changed template).
    """

    def leaves(a, b, prefix: str):
        for key, value in b.items():
            before = a.get(key, _ABSENT) if isinstance(a, dict) else _ABSENT
            if isinstance(value, dict) and isinstance(before, dict):
                yield from leaves(before, value, f"{prefix}{key}.")
            elif before != value:
                yield f"{prefix}{key}", before, value

    changed = list(leaves(old, new, ""))
    if any(k.startswith("recipe.") and k != "recipe.points" for k, _, _ in changed):
        changed = [c for c in changed if c[0] != "recipe.points"]
    return [f"{k} {_shown(before)} -> {_shown(after)}" for k, before, after in changed]


def _shown(value, limit: int = 40) -> str:
    text = "(not recorded)" if value is _ABSENT else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_apart(source: str | Path, out: str | Path) -> None:
    """Refuse an output folder that is, or lies inside, the input, and an input inside the output.

    Crops mirror the input tree, so with ``out`` equal to the input folder every crop would be
    written over the image it was cut from; inside the input, the crops and CSV files would be
    mixed into the dataset (and read as input by a later run on it). An input inside ``out`` can be
    overwritten too: input ``OUT/raw`` holding ``raw/a.jpg`` writes its crop to ``OUT/raw/a.jpg``,
    which may be another input file. Symbolic links are followed before comparing.

    Raises:
        UserError: naming both folders.
    """
    src, dst = Path(source).resolve(), Path(out).resolve()
    if not src.exists():
        return  # discover() says so, which is the first thing to fix
    if dst == src or dst.is_relative_to(src):
        where = "is the input folder" if dst == src else f"is inside the input {source}"
        raise UserError(
            f"--out {out} {where}: crops and CSV files would be written among (or over) the input "
            "files; choose an output folder outside the input"
        )
    if src.is_relative_to(dst):
        raise UserError(
            f"the input {source} is inside the output folder {out}: crops written there could overwrite "
            "input files; choose an output folder that does not hold the input"
        )


def crop_name(item: SourceItem, frame: int, face: int, config: PrepConfig) -> str:
    """Output path (relative to OUT) of one crop; mirrors the input's relative path."""
    stem = item.rel.rsplit(".", 1)[0]
    ext = config.image_format
    if item.kind == "image":
        return f"{stem}_f{face}.{ext}" if config.all_faces else f"{stem}.{ext}"
    return f"{stem}/{frame:06d}_t{face}.{ext}" if config.all_faces else f"{stem}/{frame:06d}.{ext}"


def _check_collisions(items: list[SourceItem]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        stem = item.rel.rsplit(".", 1)[0]
        if stem in seen:
            raise UserError(
                f"{seen[stem]} and {item.rel} would write the same crops; rename one or run them separately"
            )
        seen[stem] = item.rel


def _to_tensor(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    if not frame.flags.writeable:  # PIL hands out read-only arrays; torch wants to own writable memory
        frame = frame.copy()
    return torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)


def run_prep(
    source: str | Path,
    out: str | Path,
    config: PrepConfig = PrepConfig(),  # noqa: B008 - frozen dataclass
    device: str | torch.device = "cpu",
    weights: WeightFiles | None = None,
    progress: bool = True,
    detector: MTCNN | None = None,
) -> PrepSummary:
    """Detect, align and save the faces of every image and video under ``source`` into ``out``.

    Finished files of an earlier run into the same ``out`` (same settings) are skipped. Raises
    :class:`UserError` naming the file on an unreadable image or video unless
    ``config.on_error == "skip"``, and before anything is written when ``out`` and ``source``
    overlap (:func:`check_apart`). ``detector`` may be passed to reuse loaded networks.
    """
    out = Path(out)
    check_apart(source, out)
    items = discover(source)
    _check_collisions(items)
    detector = detector or MTCNN(weights, config.detector, device)
    if detector.config != config.detector:
        raise ValueError("the detector's config differs from config.detector")
    out.mkdir(parents=True, exist_ok=True)
    _check_recipe(out, config, detector.weights)
    start = time.perf_counter()

    ledger_path = out / "items.csv"
    done = {r[0] for r in _read_rows(ledger_path, ITEM_COLUMNS)} if ledger_path.exists() else set()
    ledger = _CsvLog(ledger_path, ITEM_COLUMNS, keep=lambda r: True)
    manifest = _CsvLog(out / "manifest.csv", MANIFEST_COLUMNS, keep=lambda r: r[0] in done)
    misses = _CsvLog(out / "misses.csv", MISS_COLUMNS, keep=lambda r: r[0] in done)

    summary = PrepSummary(items_total=len(items))
    todo = [it for it in items if it.rel not in done]
    summary.items_already_done = len(items) - len(todo)
    total = 0
    for it in todo:
        n = video_frame_count(it.path) if it.kind == "video" else 1
        total = None if (n is None or total is None) else total + -(-n // config.frame_step)
    bar = tqdm(total=total, unit="frame", desc="clef prep", disable=not progress, dynamic_ncols=True)
    made_dirs: set[Path] = set()

    def save(crop: torch.Tensor, rel: str) -> None:
        path = out / rel
        if path.parent not in made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(path.parent)
        pixels = crop.permute(1, 2, 0).cpu().numpy()
        options = {"quality": config.jpeg_quality} if config.image_format == "jpg" else {}
        Image.fromarray(pixels).save(path, **options)

    def process(batch: list[tuple[_ItemRun, int, np.ndarray]]) -> None:
        batch = [b for b in batch if b[0].error is None]
        if not batch:
            return
        images = [_to_tensor(frame, detector.device) for _, _, frame in batch]
        found: list[Faces] = detector.detect(images)
        for (run, index, _), image, faces in zip(batch, images, found, strict=True):
            run.frames += 1
            if len(faces) == 0:
                run.misses.append([run.item.rel, index])
                continue
            keep = len(faces) if config.all_faces else 1  # faces are sorted largest first
            boxes, scores, marks = faces.boxes[:keep], faces.scores[:keep], faces.landmarks[:keep]
            if run.tracker is not None:
                ids = run.tracker.update(boxes, index)
            elif config.all_faces:
                ids = list(range(keep))
            else:
                ids = [0]
            crops, _ = align_faces(image, marks, config.recipe)
            for k in range(keep):
                rel = crop_name(run.item, index, ids[k], config)
                save(crops[k], rel)
                box = [round(v, 2) for v in boxes[k].tolist()]
                pts = [round(v, 2) for v in marks[k].reshape(-1).tolist()]
                run.manifest.append(
                    [run.item.rel, index, ids[k], *box, round(float(scores[k]), 4), *pts, rel]
                )
        bar.update(len(batch))

    def finish(runs: list[_ItemRun]) -> None:
        for run in runs:
            if run.error is not None:
                continue
            manifest.write(run.manifest)
            misses.write(run.misses)
            manifest.flush()
            misses.flush()
            # The ledger row goes last: only now is this file complete on disk.
            ledger.write([[run.item.rel, run.item.kind, run.frames, len(run.manifest), len(run.misses)]])
            ledger.flush()
            summary.items_processed += 1
            summary.frames += run.frames
            summary.faces += len(run.manifest)
            summary.misses += len(run.misses)

    batch: list[tuple[_ItemRun, int, np.ndarray]] = []
    closed: list[_ItemRun] = []
    try:
        for item in todo:
            tracker = (
                IoUTracker(config.track_iou, config.track_max_gap)
                if (item.kind == "video" and config.all_faces)
                else None
            )
            run = _ItemRun(item, tracker)
            try:
                for index, frame in iter_frames(item, config.frame_step):
                    batch.append((run, index, frame))
                    if len(batch) >= config.batch_size:
                        process(batch)
                        batch = []
                        finish(closed)
                        closed = []
            except UserError as err:
                if config.on_error == "raise":
                    raise
                run.error = str(err)
                summary.skipped.append((item.rel, str(err)))
            closed.append(run)
        process(batch)
        finish(closed)
    finally:
        bar.close()
        for log in (ledger, manifest, misses):
            log.close()
        with open(out / "skipped.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(SKIP_COLUMNS)
            writer.writerows(summary.skipped)
    summary.seconds = time.perf_counter() - start
    return summary
