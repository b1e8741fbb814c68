"""Running a fine-tuned model on images and videos: one row per face per frame (`clef predict`).

:class:`Predictor` turns inputs (image files, folders searched recursively, frame trees, videos,
in-memory arrays) into rows. The face path is `clef prep`'s: MTCNN (:class:`clef.prep.MTCNN`) finds
faces and 5 landmarks, :func:`clef.prep.align_faces` warps each onto the 5-point template of an
:class:`clef.prep.AlignRecipe` (prep's defaults: 224 px, margin 0.25), and the crop is resized to the
model's input as training resized the prep crops (:func:`clef.data.dataset.square_image`). With
``aligned=True`` inputs already are aligned crops and only the resize is applied. Videos with
``all_faces`` keep a face's id across frames with prep's IoU tracker.

Decoding (and the resize of aligned crops) runs in loader workers while the main process detects and
encodes batches on the device. Rows are written as they are produced (:meth:`Predictor.run`): CSV,
or Parquet parts when pyarrow is installed, plus a JSON sidecar, so memory stays bounded however long
the video and an interrupted run resumes where its file ends.

Columns (:data:`FIXED_COLUMNS`, then one block per scorer, :func:`output_blocks`):

* ``source`` (the input path as given, or ``FOLDER/relative path``; ``array:K`` for the K-th array),
  ``frame`` (video: the decoded frame number from 0; image: the number a frame-tree file name holds,
  e.g. ``0012.jpg`` -> 12, else 0), ``time`` (video: seconds; images: empty), ``face`` (0 = the
  largest face; with ``all_faces``: rank by size in an image, track id in a video), the box
  ``x1, y1, x2, y2``, ``confidence`` (MTCNN's O-Net face probability) and the 5 landmarks
  ``left_eye_x, ..., mouth_right_y`` (source pixels; empty with ``aligned``);
* the trained labels: ``ID_prob`` and the 0/1 decision ``ID`` (probability >= the label's threshold,
  0.5) per independent label (``AU12_prob``, ``AU12``); for a one-of-C space every ``ID_prob`` and
  then ``expression``, the arg-max label;
* open-vocabulary labels (:mod:`clef.open_vocab`): ``NAME_cos``, ``NAME_prob`` (and ``NAME`` for
  independent ones), then each group's decision column.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from clef.augment import to_float
from clef.checkpoint import checkpoint_paths
from clef.data.dataset import square_image
from clef.errors import UserError
from clef.finetuned import FineTuneModel, load_finetuned
from clef.open_vocab import OpenLabel, OpenVocabulary, OpenVocabularyScores, assign_columns
from clef.prep.align import AlignRecipe, align_faces
from clef.prep.mtcnn import MTCNN, DetectorConfig, Faces, WeightFiles
from clef.prep.pipeline import LANDMARK_NAMES, IoUTracker
from clef.prep.sources import discover, read_image, video_frame_count, video_frames
from clef.run_folder import atomic_write

__all__ = [
    "FIXED_COLUMNS",
    "FaceCrops",
    "model_id",
    "PredictConfig",
    "PredictSummary",
    "Predictor",
    "TrainedLabels",
    "output_blocks",
]

BOX_COLUMNS = ("x1", "y1", "x2", "y2")
LANDMARK_COLUMNS = tuple(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in ("x", "y"))
FIXED_COLUMNS: tuple[str, ...] = (
    "source",
    "frame",
    "time",
    "face",
    *BOX_COLUMNS,
    "confidence",
    *LANDMARK_COLUMNS,
)
ONE_OF_C_DECISION = "expression"  # the decision column of a one-of-C trained label space
TEMPLATE_CHOICES = ("model", "none")
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet"}
SIDECAR_FORMAT = "clef-predictions"
NO_FACE = "no face found"
PARQUET_HINT = "writing Parquet needs pyarrow (pip install pyarrow); or give a .csv output"


@dataclass(frozen=True)
class PredictConfig:
    """How inputs become rows.

    ``aligned``: inputs are aligned face crops (no detection). ``all_faces``: every detected face
    instead of the largest. ``frame_step``: every n-th video frame; ``start`` / ``end``: the part of
    each video to read, in seconds (``end`` None: to the end). ``recipe`` / ``detector``: the alignment
    and MTCNN settings (`clef prep`'s; use the ones the model's training crops were made with).
    ``templates``: how open-vocabulary texts are embedded: ``model`` puts them into the model's own
    name templates (the context its trained label names were embedded in, so a new text is scored
    the way the trained names were), ``none`` embeds each text exactly as written (for full
    sentences). ``only_labels``: write the open-vocabulary labels without the trained ones.
    ``batch_size``: frames per detector and encoder batch; ``workers``: decoding processes (0: in
    the main process).
    """

    batch_size: int = 64
    workers: int = 0
    aligned: bool = False
    all_faces: bool = False
    frame_step: int = 1
    start: float = 0.0
    end: float | None = None
    recipe: AlignRecipe = field(default_factory=AlignRecipe)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    templates: str = "model"
    only_labels: bool = False
    track_iou: float = 0.3
    track_max_gap: int = 15

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.frame_step < 1 or self.workers < 0:
            raise UserError("batch_size and frame_step must be at least 1, workers at least 0")
        if self.start < 0 or (self.end is not None and self.end < self.start):
            raise UserError(f"need 0 <= start <= end, got start {self.start}, end {self.end}")
        if self.templates not in TEMPLATE_CHOICES:
            raise UserError(f"templates must be one of {', '.join(TEMPLATE_CHOICES)}, got {self.templates!r}")

    def settings(self) -> dict[str, Any]:
        """What changes the rows (a resumed run must match it); batch size and workers do not."""
        out = asdict(self)
        for key in ("batch_size", "workers"):
            out.pop(key)
        out["recipe"] = self.recipe.to_dict()
        return out


# ------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Item:
    """One input: ``kind`` image, video or array; ``source`` is its name in the ``source`` column."""

    kind: str
    source: str
    path: Path | None = None
    array: np.ndarray | None = None


def collect_inputs(inputs: Iterable[Any]) -> list[_Item]:
    """Items of the inputs: paths (a file, or a folder searched recursively for images and videos, as
    :func:`clef.prep.sources.discover` does) and arrays ((H, W, 3) or (H, W) uint8, or PIL images).

    Raises:
        UserError: a path does not exist or holds no image or video; two inputs give the same source;
            an array is not an image.
    """
    items: list[_Item] = []
    for k, value in enumerate(inputs):
        if isinstance(value, (str, Path)):
            root = Path(value)
            for found in discover(root):
                source = root.as_posix() if root.is_file() else (root / found.rel).as_posix()
                if "\n" in source or "\r" in source:
                    raise UserError(f"{source!r}: file names with line breaks cannot be written as rows")
                items.append(_Item(found.kind, source, found.path))
        else:
            items.append(_Item("array", f"array:{k}", array=_as_rgb(value, f"input {k}")))
    seen: set[str] = set()
    for item in items:
        if item.source in seen:
            raise UserError(f"{item.source} is given twice; give each input once")
        seen.add(item.source)
    return items


def _as_rgb(value: Any, what: str) -> np.ndarray:
    if isinstance(value, Image.Image):
        return np.asarray(value.convert("RGB"))
    array = np.asarray(value)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise UserError(
            f"{what}: expected an (H, W, 3) or (H, W) uint8 image, got {array.shape} {array.dtype}"
        )
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array


def _frame_number(path: Path | None) -> int:
    """A frame tree's file name as its frame number (``0012.jpg`` -> 12); 0 for other names."""
    stem = path.stem if path is not None else ""
    return int(stem) if stem.isdigit() else 0


# Messages from the frame stream to the main loop, in order.
@dataclass
class _Frame:
    source: str
    kind: str
    frame: int
    time: float
    image: np.ndarray  # (H, W, 3) uint8: the whole frame, or the model-size crop with ``aligned``


@dataclass
class _Failed:
    source: str
    reason: str


@dataclass
class _Done:
    source: str
    kind: str


class _FrameStream(torch.utils.data.IterableDataset):
    """Decodes the items (each loader worker takes every n-th whole item, so a video's frames stay in
    order) and yields :class:`_Frame`, :class:`_Failed` and one :class:`_Done` per item.

    ``done``: per source, the last frame a resumed output already holds (images: any value = done).
    ``size``: resize frames to this square side here, in the worker (aligned crops); None: as decoded.
    """

    def __init__(self, items: list[_Item], config: PredictConfig, size: int | None, done: dict[str, int]):
        self.items, self.config, self.size, self.done = items, config, size, done

    def __iter__(self) -> Iterator[_Frame | _Failed | _Done]:
        info = torch.utils.data.get_worker_info()
        share = self.items if info is None else self.items[info.id :: info.num_workers]
        for item in share:
            yield from self._item(item)

    def _prepared(self, image: np.ndarray) -> np.ndarray:
        return image if self.size is None else square_image(Image.fromarray(image), self.size)

    def _item(self, item: _Item) -> Iterator[_Frame | _Failed | _Done]:
        cfg = self.config
        last = self.done.get(item.source)
        if item.kind != "video" and last is not None:
            return  # a resumed output holds this image already
        try:
            if item.kind == "video":
                first = 0 if last is None else last + 1
                for vf in video_frames(item.path, cfg.frame_step, cfg.start, cfg.end, first_index=first):
                    yield _Frame(item.source, item.kind, vf.index, vf.time, self._prepared(vf.rgb))
            else:
                image = read_image(item.path) if item.kind == "image" else item.array
                yield _Frame(
                    item.source, item.kind, _frame_number(item.path), math.nan, self._prepared(image)
                )
        except UserError as err:
            yield _Failed(item.source, str(err))
        yield _Done(item.source, item.kind)


def _as_is(message):
    return message


# ------------------------------------------------------------------------------------------- scoring
class OutputBlock(Protocol):
    """A scorer of image embeddings that owns some output columns.

    ``output_columns()`` names them in order; ``columns(embeddings (B, D) unit-norm)`` returns each
    column's (B,) values; ``describe()`` is what the sidecar records about them.
    """

    def output_columns(self) -> list[str]: ...

    def columns(self, embeddings: Tensor) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


class TrainedLabels:
    """The model's own labels, scored by its head against the inference prototypes (every template
    averaged), exactly as :func:`clef.inference.predict` scores them."""

    def __init__(self, model: FineTuneModel) -> None:
        self.model = model
        self.space = model.space
        with torch.no_grad():
            self.prototypes = model.prototypes()
        self.thresholds = self.space.thresholds()

    def output_columns(self) -> list[str]:
        if self.space.multi_label:
            return [c for label in self.space.ids for c in (f"{label}_prob", label)]
        return [f"{label}_prob" for label in self.space.ids] + [ONE_OF_C_DECISION]

    @torch.no_grad()
    def columns(self, embeddings: Tensor) -> dict[str, np.ndarray]:
        logits = self.model.logits(embeddings, self.prototypes)
        probabilities = self.space.probabilities(logits).float().cpu().numpy()
        out: dict[str, np.ndarray] = {}
        for j, label in enumerate(self.space.ids):
            out[f"{label}_prob"] = probabilities[:, j]
            if self.space.multi_label:
                out[label] = (probabilities[:, j] >= self.thresholds[label]).astype(np.int64)
        if not self.space.multi_label:
            ids = np.array(self.space.ids, dtype=object)
            out[ONE_OF_C_DECISION] = ids[probabilities.argmax(axis=1)]
        return {c: out[c] for c in self.output_columns()}

    def describe(self) -> dict[str, Any]:
        space = self.space
        return {
            "kind": "trained",
            "labels": list(space.ids),
            "names": list(space.names),
            "activation": "sigmoid per label" if space.multi_label else "softmax over the labels",
            "thresholds": self.thresholds,
            "decision": "ID = ID_prob >= threshold"
            if space.multi_label
            else f"{ONE_OF_C_DECISION} = arg-max label",
            "head": self.model.head_kind,
            "name_templates": list(self.model.name_templates),
        }


class _OpenBlock:
    """:class:`clef.open_vocab.OpenVocabularyScores` as an output block."""

    def __init__(self, scores: OpenVocabularyScores, template_rule: str) -> None:
        self.scores, self.template_rule = scores, template_rule

    def output_columns(self) -> list[str]:
        return self.scores.vocabulary.output_columns()

    def columns(self, embeddings: Tensor) -> dict[str, np.ndarray]:
        return self.scores.columns(embeddings)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "open vocabulary",
            **self.scores.vocabulary.to_dict(),
            "templates": list(self.scores.templates),
            "template_rule": self.template_rule,
            "score": "NAME_cos = cos(image, text); logit = scale * cos (no bias); NAME_prob = sigmoid(logit) "
            "(independent) or softmax over the group; NAME = NAME_prob >= 0.5; group column = arg-max",
            "scale": float(self.scores.clef.scale().detach()),
        }


def output_blocks(
    model: FineTuneModel,
    labels: Sequence[OpenLabel] = (),
    templates: str = "model",
    only_labels: bool = False,
) -> list[OutputBlock]:
    """The scorers whose columns follow :data:`FIXED_COLUMNS`, in column order: the model's trained
    labels (unless ``only_labels``), then the open-vocabulary ``labels``.

    This is the one place that decides the label columns. A model that outputs more than label
    probabilities (e.g. AU intensities, ``AU12_intensity``) adds its block here, after the trained
    labels.

    Raises:
        UserError: ``only_labels`` without open-vocabulary labels; a label name that collides.
    """
    blocks: list[OutputBlock] = []
    if not only_labels:
        blocks.append(TrainedLabels(model))
    elif not labels:
        raise UserError("only_labels needs open-vocabulary labels (--labels or --label-file)")
    if labels:
        taken = list(FIXED_COLUMNS) + [c for b in blocks for c in b.output_columns()]
        vocabulary: OpenVocabulary = assign_columns(labels, taken)
        if templates == "model":
            texts, rule = model.name_templates, "the model's name templates, averaged"
        else:
            texts, rule = ("{}",), "none: each text embedded as written"
        blocks.append(_OpenBlock(OpenVocabularyScores(model.clef, vocabulary, texts), rule))
    return blocks


# ------------------------------------------------------------------------------------------ outputs
@dataclass
class _SourceState:
    """What a resumed output already holds of one source: its last frame, and (videos) the last box
    of every face id, to continue the tracker."""

    last_frame: int
    tracks: dict[int, tuple[list[float], int]] = field(default_factory=dict)


class _Resume:
    """Folds rows, a frame at a time, into per-source states (what is done)."""

    def __init__(self) -> None:
        self.sources: dict[str, _SourceState] = {}

    def add_frame(self, rows: list[dict[str, str]]) -> None:
        source, frame = rows[0]["source"], int(float(rows[0]["frame"]))
        state = self.sources.setdefault(source, _SourceState(frame))
        state.last_frame = max(state.last_frame, frame)
        if rows[0]["time"] not in ("", "nan", "NaN", None):  # a video frame: remember its boxes
            for row in rows:
                if row["x1"] not in ("", "nan", "NaN", None):
                    box = [float(row[c]) for c in BOX_COLUMNS]
                    state.tracks[int(float(row["face"]))] = (box, frame)

    def done(self) -> dict[str, int]:
        return {s: st.last_frame for s, st in self.sources.items()}


class _CsvRows:
    """Rows appended to a CSV, flushed to the disk after every batch."""

    kind = "csv"

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns

    def start(self, resume: bool, complete: Collection[str] = ()) -> _Resume:
        """Open for writing; with ``resume``, first cut a torn tail and the last frame (it may miss
        faces) unless its source is in ``complete`` (known to be on disk whole), and return what the
        file holds."""
        state = _Resume()
        if resume:
            state = self._scan_and_truncate(complete)
            self.file = open(self.path, "a", newline="")
        else:
            self.file = open(self.path, "w", newline="")
            csv.writer(self.file).writerow(self.columns)
            self._sync()
        return state

    def _scan_and_truncate(self, complete: Collection[str]) -> _Resume:
        state = _Resume()
        with open(self.path, "rb") as f:
            header = f.readline()
            expected = ",".join(self.columns)
            if header.decode("utf-8", "replace").rstrip("\r\n") != expected:
                raise UserError(
                    f"{self.path}: its header is not this run's columns; use --overwrite or a new file"
                )
            offset = len(header)
            frame_start, key, rows = offset, None, []
            for line in f:
                parsed = next(csv.reader([line.decode("utf-8", "replace")]), [])
                if not line.endswith(b"\n") or len(parsed) != len(self.columns):
                    break  # a torn last line: everything from here is redone
                row = dict(zip(self.columns, parsed, strict=True))
                if (row["source"], row["frame"]) != key:
                    if rows:
                        state.add_frame(rows)
                    key, rows, frame_start = (row["source"], row["frame"]), [], offset
                rows.append(row)
                offset += len(line)
        if rows and key[0] in complete:
            state.add_frame(rows)
            frame_start = offset
        # Otherwise the rows of the last frame go too: a crash between two of its faces leaves no trace.
        os.truncate(self.path, frame_start)
        return state

    def write(self, rows: pd.DataFrame) -> None:
        if len(rows):
            rows.to_csv(self.file, header=False, index=False, float_format="%.7g", lineterminator="\n")
        self._sync()

    def _sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


class _ParquetParts:
    """Rows as a folder of Parquet files (``part-000000.parquet``, ...), each written whole and
    atomically once ``part_rows`` rows are buffered (or at the end): a crash loses the buffer only,
    and pandas / pyarrow read the folder as one table."""

    kind = "parquet"

    def __init__(self, path: Path, columns: list[str], part_rows: int = 20_000) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError(PARQUET_HINT) from None
        self.path, self.columns, self.part_rows = path, columns, part_rows
        self.buffer: list[pd.DataFrame] = []
        self.buffered = 0

    def _parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def start(self, resume: bool, complete: Collection[str] = ()) -> _Resume:
        """As :meth:`_CsvRows.start`; parts are whole, so nothing is cut."""
        import pyarrow.parquet as pq

        state = _Resume()
        if not resume:
            self.path.mkdir(parents=True, exist_ok=False)
        for part in self._parts() if resume else []:
            table = pq.read_table(part, columns=["source", "frame", "time", "face", *BOX_COLUMNS])
            if table.schema.names and list(pq.read_schema(part).names) != self.columns:
                raise UserError(f"{part}: its columns are not this run's; use --overwrite or a new folder")
            frame = table.to_pandas().astype(str)
            for _, rows in frame.groupby(["source", "frame"], sort=False):
                state.add_frame(rows.to_dict("records"))
        self.next_part = len(self._parts())
        return state

    def write(self, rows: pd.DataFrame) -> None:
        if len(rows):
            self.buffer.append(rows)
            self.buffered += len(rows)
        if self.buffered >= self.part_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        table = pd.concat(self.buffer, ignore_index=True)
        target = self.path / f"part-{self.next_part:06d}.parquet"
        atomic_write(target, lambda tmp: table.to_parquet(tmp, index=False))
        self.next_part += 1
        self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self._flush()


def _rows_writer(path: Path, columns: list[str]) -> _CsvRows | _ParquetParts:
    kind = OUTPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path}: the output must end in {' or '.join(OUTPUT_FORMATS)}")
    return _CsvRows(path, columns) if kind == "csv" else _ParquetParts(path, columns)


def sidecar_path(out: str | Path) -> Path:
    """The JSON sidecar of an output: ``predictions.csv`` -> ``predictions.json``."""
    return Path(out).with_suffix(".json")


class _SkipLog:
    """Inputs and frames that gave no row, and why. Frames without a face are kept as runs of
    consecutive processed frames per source (``[first, last]``), so a long faceless stretch is one
    entry; files that failed keep their message."""

    def __init__(self, previous: list[dict] | None = None, retried: set[str] = frozenset()) -> None:
        self.misses: dict[str, list[list[int]]] = {}
        self.failures: list[dict[str, str]] = []
        for entry in previous or []:
            if entry.get("reason") == NO_FACE:
                self.misses[entry["source"]] = [list(r) for r in entry["frames"]]
            elif entry["source"] not in retried:
                self.failures.append(entry)
        self.changed = False

    def miss(self, source: str, frame: int, previous: int | None) -> None:
        """Frame ``frame`` of ``source`` had no face; ``previous`` is the frame processed before it."""
        runs = self.misses.setdefault(source, [])
        if runs and previous is not None and runs[-1][1] == previous:
            runs[-1][1] = frame
        elif not _covered(runs, frame):  # a frame redone after a resume is no new entry
            runs.append([frame, frame])
        self.changed = True

    def failure(self, source: str, reason: str) -> None:
        if not any(f["source"] == source and f["reason"] == reason for f in self.failures):
            self.failures.append({"source": source, "reason": reason})
        self.changed = True

    @property
    def frames_without_face(self) -> int:
        return sum(b - a + 1 for runs in self.misses.values() for a, b in runs)

    def entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = list(self.failures)
        out += [{"source": s, "reason": NO_FACE, "frames": runs} for s, runs in self.misses.items()]
        return out


def _covered(runs: list[list[int]], frame: int) -> bool:
    """Whether ``frame`` lies in one of ``runs`` (sorted, as frames arrive in order). Only the last runs
    can reach it, so this stops at the first run that ends before it."""
    for first, last in reversed(runs):
        if last < frame:
            return False
        if first <= frame:
            return True
    return False


@dataclass
class PredictSummary:
    """Counts of one run. ``skipped``: the sidecar's entries (source, reason, and ``frames`` runs
    ``[first, last]`` for frames without a face)."""

    output: Path | None = None
    sidecar: Path | None = None
    files: int = 0
    frames: int = 0
    rows: int = 0
    seconds: float = 0.0
    resumed_sources: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed_files(self) -> int:
        return sum(1 for s in self.skipped if s["reason"] != NO_FACE)

    @property
    def frames_without_face(self) -> int:
        return sum(b - a + 1 for s in self.skipped if s["reason"] == NO_FACE for a, b in s["frames"])


# ------------------------------------------------------------------------------------------ predictor
@dataclass
class FaceCrops:
    """The faces kept in one image (largest first) and their crops at the model's input size:
    ``faces`` boxes (K, 4), scores (K,), landmarks (K, 5, 2) on the CPU; ``crops`` (K, S, S, 3) uint8."""

    faces: Faces
    crops: np.ndarray


@dataclass
class _Batch:
    """What one batch of frames produced: rows, and the messages that arrived with it."""

    rows: pd.DataFrame
    frames: int
    misses: list[tuple[str, int, int | None]]
    failures: list[_Failed]
    done: list[_Done]


class Predictor:
    """A fine-tuned model applied to images, folders, frame trees, videos and arrays.

    Args:
        model: a :class:`clef.finetuned.FineTuneModel`, or the path of one (``RUN_DIR/model``).
        config: :class:`PredictConfig`.
        labels: open-vocabulary labels: texts, or :class:`clef.open_vocab.OpenLabel` (e.g. from
            :func:`clef.open_vocab.read_label_file`) scored next to the trained ones.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or a torch device.
        weights: MTCNN weight files (default: the installed package; unused with ``aligned``).
        progress: a progress bar (frames/s) in :meth:`run`.

    :meth:`predict` returns a DataFrame of all rows (``attrs["skipped"]`` says what gave none);
    :meth:`iter_predict` yields one DataFrame per batch; :meth:`stream` scores an iterable of frames
    (e.g. a camera); :meth:`run` writes a file and its sidecar, resumably. ``columns`` is the column
    order of every row.

    Raises:
        UserError: the model is not a fine-tuned checkpoint, an unknown device, bad labels.
    """

    def __init__(
        self,
        model: FineTuneModel | str | Path,
        config: PredictConfig = PredictConfig(),  # noqa: B008 - frozen dataclass
        labels: Sequence[str | OpenLabel] = (),
        device: str | torch.device = "auto",
        weights: WeightFiles | None = None,
        progress: bool = False,
    ) -> None:
        from clef.run_config import resolve_device

        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        if isinstance(model, (str, Path)):
            self.model, meta = load_finetuned(model, device=self.device)
            self.model_id = model_id(model, meta)
        else:
            self.model = model.to(self.device).eval()
            self.model_id = {"path": None, "note": "an in-memory model"}
        self.config = config
        self.progress = progress
        opened = [OpenLabel(x) if isinstance(x, str) else x for x in labels]
        self.blocks = output_blocks(self.model, opened, config.templates, config.only_labels)
        self.columns: list[str] = list(FIXED_COLUMNS) + [c for b in self.blocks for c in b.output_columns()]
        self._weights = weights
        self._detector: MTCNN | None = None
        self._trackers: dict[str, IoUTracker] = {}
        self._previous: dict[str, int] = {}  # last processed frame per source (runs of missing faces)
        self._resume_tracks: dict[str, _SourceState] = {}  # face tracks of a resumed output

    # --- public API ---------------------------------------------------------------------------
    def predict(self, inputs: Iterable[Any]) -> pd.DataFrame:
        """All rows of ``inputs`` (paths or arrays) as one DataFrame; ``attrs["skipped"]`` lists what
        gave no row and why."""
        self._start()
        skipped = _SkipLog()
        parts = []
        for batch in self._batches(collect_inputs(inputs), {}):
            if len(batch.rows):  # an empty batch (no face) would turn every column into objects
                parts.append(batch.rows)
            self._log(batch, skipped)
        table = pd.concat(parts, ignore_index=True) if parts else self._empty()
        table.attrs["skipped"] = skipped.entries()
        return table

    def iter_predict(self, inputs: Iterable[Any]) -> Iterator[pd.DataFrame]:
        """The rows of ``inputs`` one batch at a time (bounded memory, however many frames)."""
        self._start()
        for batch in self._batches(collect_inputs(inputs), {}):
            yield batch.rows

    def stream(
        self, frames: Iterable[Any], source: str = "stream", fps: float | None = None
    ) -> Iterator[pd.DataFrame]:
        """Rows of a stream of frames ((H, W, 3) uint8 arrays or PIL images), one DataFrame per batch;
        ``frame`` counts from 0, ``time`` = frame / ``fps`` (empty without it). Runs in this process."""
        self._start()
        size = self.model.clef.preprocess.image_size if self.config.aligned else None

        def messages() -> Iterator[_Frame | _Done]:
            for k, image in enumerate(frames):
                rgb = _as_rgb(image, f"{source} frame {k}")
                if size is not None:
                    rgb = square_image(Image.fromarray(rgb), size)
                yield _Frame(source, "video", k, k / fps if fps else math.nan, rgb)
            yield _Done(source, "video")

        for batch in self._process_messages(messages()):
            yield batch.rows

    def run(
        self, inputs: Iterable[Any], out: str | Path, resume: bool = False, overwrite: bool = False
    ) -> PredictSummary:
        """Write the rows of ``inputs`` to ``out`` (``.csv``, or ``.parquet``: a folder of parts) as they
        are produced, and the sidecar ``out`` with suffix ``.json``, written atomically (and again
        whenever skips change, before the rows that follow them are written).

        ``resume``: continue an output of the same model and settings: sources it holds are skipped
        (a video from its last written frame on), a torn tail is cut. ``overwrite``: replace it.

        Raises:
            UserError: ``out`` exists and neither flag is given; the output or its sidecar belongs to
                another model or other settings; Parquet without pyarrow.
        """
        import shutil

        out = Path(out)
        side = sidecar_path(out)
        writer = _rows_writer(out, self.columns)
        items = collect_inputs(inputs)
        previous = None
        if out.exists():
            if overwrite:
                if out.is_dir():
                    foreign = [p.name for p in out.iterdir() if not p.name.startswith(("part-", ".part-"))]
                    if foreign:  # never delete a folder this command did not write
                        raise UserError(f"{out} holds other files than Parquet parts ({foreign[0]}, ...)")
                    shutil.rmtree(out)
                else:
                    out.unlink()
                side.unlink(missing_ok=True)
            elif not resume:
                raise UserError(f"{out} exists; pass --resume to continue it or --overwrite to replace it")
            else:
                previous = self._check_resumable(side)
        else:
            resume = False
        finished: list[str] = list(previous.get("finished_videos", [])) if previous else []
        state = writer.start(resume, complete=set(finished))
        self._start(state.sources)
        retried = {item.source for item in items}
        skipped = _SkipLog(previous.get("skipped") if previous else None, retried)
        summary = PredictSummary(out, side, resumed_sources=len(state.sources))
        done = state.done()
        todo = [it for it in items if not (it.kind == "video" and it.source in finished)]
        record = self._sidecar_base(items)
        created = previous.get("created") if previous else _now()

        def write_sidecar(status: str) -> None:
            payload = {
                **record,
                "created": created,
                "updated": _now(),
                "status": status,
                "counts": {
                    "files": summary.files,
                    "frames": summary.frames,
                    "rows": summary.rows,
                    "frames_without_face": skipped.frames_without_face,
                    "failed_files": len(skipped.failures),
                },
                "finished_videos": finished,
                "skipped": skipped.entries(),
            }
            text = json.dumps(payload, indent=2, allow_nan=True) + "\n"
            atomic_write(side, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
            skipped.changed = False

        from tqdm.auto import tqdm

        bar = tqdm(
            total=_frame_total(todo, self.config, done),
            unit="frame",
            desc="clef predict",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        status = "interrupted"
        write_sidecar("running")
        try:
            for batch in self._batches(todo, done):
                self._log(batch, skipped)
                if skipped.changed:  # the sidecar knows a skip before any row written after it
                    write_sidecar("running")
                writer.write(batch.rows)
                summary.frames += batch.frames
                summary.rows += len(batch.rows)
                for d in batch.done:
                    summary.files += 1
                    if (
                        d.kind == "video"
                        and d.source not in finished
                        and not any(f.source == d.source for f in batch.failures)
                    ):
                        finished.append(d.source)
                bar.update(batch.frames)
            status = "finished"
        finally:
            bar.close()
            writer.close()
            summary.seconds = time.perf_counter() - start
            summary.skipped = skipped.entries()
            write_sidecar(status)
        return summary

    # --- internals ----------------------------------------------------------------------------
    def _start(self, resumed: dict[str, _SourceState] | None = None) -> None:
        """Forget the per-source state of an earlier call (face tracks, the last frame seen)."""
        self._trackers, self._previous, self._resume_tracks = {}, {}, dict(resumed or {})

    def _empty(self) -> pd.DataFrame:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in self.columns})

    def _log(self, batch: _Batch, skipped: _SkipLog) -> None:
        for source, frame, previous in batch.misses:
            skipped.miss(source, frame, previous)
        for failure in batch.failures:
            skipped.failure(failure.source, failure.reason)

    def _batches(self, items: list[_Item], done: dict[str, int]) -> Iterator[_Batch]:
        cfg = self.config
        size = self.model.clef.preprocess.image_size if cfg.aligned else None
        stream = _FrameStream(items, cfg, size, done)
        if cfg.workers == 0:
            messages: Iterable = stream
        else:
            messages = torch.utils.data.DataLoader(
                stream,
                batch_size=None,
                num_workers=min(cfg.workers, max(1, len(items))),
                collate_fn=_as_is,
                prefetch_factor=max(2, cfg.batch_size // max(1, cfg.workers)),
            )
        yield from self._process_messages(iter(messages))

    def _process_messages(self, messages: Iterator[_Frame | _Failed | _Done]) -> Iterator[_Batch]:
        frames: list[_Frame] = []
        notes: list[_Failed | _Done] = []
        for message in messages:
            if isinstance(message, _Frame):
                frames.append(message)
                if len(frames) >= self.config.batch_size:
                    yield self._process(frames, notes)
                    frames, notes = [], []
            else:
                notes.append(message)  # it follows the frames already waiting, so it waits with them
        if frames or notes:
            yield self._process(frames, notes)

    def faces(self, images: Sequence[np.ndarray]) -> list[FaceCrops]:
        """Detect and align the faces of full images ((H, W, 3) uint8) on the predictor's device: per
        image the faces kept (the largest, or all with ``all_faces``; largest first) and their crops at
        the model's input size, made as `clef prep` + the training loader make them."""
        size = self.model.clef.preprocess.image_size
        tensors = [torch.from_numpy(np.ascontiguousarray(x)).to(self.device).permute(2, 0, 1) for x in images]
        out = []
        for image, faces in zip(tensors, self.detector.detect(tensors), strict=True):
            keep = len(faces) if self.config.all_faces else min(1, len(faces))
            kept = Faces(faces.boxes[:keep].cpu(), faces.scores[:keep].cpu(), faces.landmarks[:keep].cpu())
            aligned, _ = align_faces(image, faces.landmarks[:keep], self.config.recipe)
            pixels = aligned.permute(0, 2, 3, 1).cpu().numpy()
            crops = np.stack([square_image(Image.fromarray(c), size) for c in pixels]) if keep else None
            out.append(
                FaceCrops(kept, crops if crops is not None else np.zeros((0, size, size, 3), np.uint8))
            )
        return out

    @property
    def detector(self) -> MTCNN:
        if self._detector is None:
            self._detector = MTCNN(self._weights, self.config.detector, self.device)
        return self._detector

    def _tracker(self, source: str) -> IoUTracker:
        tracker = self._trackers.get(source)
        if tracker is None:
            tracker = IoUTracker(self.config.track_iou, self.config.track_max_gap)
            resumed = self._resume_tracks.get(source)
            if resumed is not None:  # a resumed video continues its face ids
                for tid, (box, frame) in resumed.tracks.items():
                    tracker.tracks[tid] = (torch.tensor(box), frame)
                tracker.next_id = max(resumed.tracks, default=-1) + 1
            self._trackers[source] = tracker
        return tracker

    @torch.inference_mode()
    def _process(self, frames: list[_Frame], notes: list[_Failed | _Done]) -> _Batch:
        cfg = self.config
        clef = self.model.clef
        meta: list[list[Any]] = []  # one per face: source, frame, time, face, box, confidence, landmarks
        crops: list[np.ndarray] = []
        misses: list[tuple[str, int, int | None]] = []
        nan_geometry = [math.nan] * (4 + 1 + 10)
        if cfg.aligned:
            for f in frames:
                meta.append([f.source, f.frame, f.time, 0, *nan_geometry])
                crops.append(f.image)
        elif frames:
            found = self.faces([f.image for f in frames])
            for f, kept in zip(frames, found, strict=True):
                previous = self._previous.get(f.source)
                self._previous[f.source] = f.frame
                if len(kept.faces) == 0:
                    misses.append((f.source, f.frame, previous))
                    continue
                boxes, scores, marks = kept.faces.boxes, kept.faces.scores, kept.faces.landmarks
                if cfg.all_faces and f.kind == "video":
                    ids = self._tracker(f.source).update(boxes, f.frame)
                else:
                    ids = list(range(len(kept.faces)))
                for k in range(len(kept.faces)):
                    box = [round(v, 2) for v in boxes[k].tolist()]
                    points = [round(v, 2) for v in marks[k].reshape(-1).tolist()]
                    meta.append(
                        [f.source, f.frame, f.time, ids[k], *box, round(float(scores[k]), 4), *points]
                    )
                    crops.append(kept.crops[k])
        for note in notes:
            if isinstance(note, _Done):
                self._trackers.pop(note.source, None)
                self._previous.pop(note.source, None)
        rows = self._empty()
        if crops:
            scored: dict[str, list[np.ndarray]] = {}
            for i in range(0, len(crops), cfg.batch_size):
                chunk = torch.from_numpy(np.stack(crops[i : i + cfg.batch_size])).to(self.device)
                x = clef.preprocess.normalize(to_float(chunk.permute(0, 3, 1, 2)))
                embeddings = clef.encode_image(x)
                for block in self.blocks:
                    for column, values in block.columns(embeddings).items():
                        scored.setdefault(column, []).append(values)
            fixed = pd.DataFrame(meta, columns=list(FIXED_COLUMNS))
            labels = pd.DataFrame({c: np.concatenate(v) for c, v in scored.items()})
            rows = pd.concat([fixed, labels], axis=1)[self.columns]
        return _Batch(
            rows=rows,
            frames=len(frames),
            misses=misses,
            failures=[n for n in notes if isinstance(n, _Failed)],
            done=[n for n in notes if isinstance(n, _Done)],
        )

    def _sidecar_base(self, items: list[_Item]) -> dict[str, Any]:
        from clef import __version__

        clef = self.model.clef
        cfg = self.config
        faces: dict[str, Any]
        if cfg.aligned:
            faces = {"faces": "inputs are aligned crops (aligned=True); no detection"}
        else:
            faces = {
                "faces": "MTCNN + 5-point similarity alignment (clef prep's pipeline)",
                "recipe": cfg.recipe.to_dict(),
                "detector": asdict(cfg.detector),
                "detector_weights": self.detector.weights.origin,
                "all_faces": cfg.all_faces,
                "track_iou": cfg.track_iou,
                "track_max_gap": cfg.track_max_gap,
            }
        return {
            "format": SIDECAR_FORMAT,
            "format_version": 1,
            "clef_version": __version__,
            "model": self.model_id,
            "columns": self.columns,
            "labels": [b.describe() for b in self.blocks],
            "preprocessing": {
                **faces,
                "model_input": {
                    "size": clef.preprocess.image_size,
                    "mean": list(clef.preprocess.mean),
                    "std": list(clef.preprocess.std),
                    "resize": "bilinear (Pillow), as the training loader (clef.data.dataset.square_image)",
                },
                "video": {"frame_step": cfg.frame_step, "start": cfg.start, "end": cfg.end},
            },
            "settings": cfg.settings(),
            "inputs": len(items),
        }

    def _check_resumable(self, side: Path) -> dict[str, Any]:
        try:
            previous = json.loads(side.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(
                f"{side}: the sidecar of the output to resume is missing; use --overwrite"
            ) from None
        except json.JSONDecodeError as err:
            raise UserError(f"{side}: not valid JSON ({err}); use --overwrite") from None
        if previous.get("format") != SIDECAR_FORMAT:
            raise UserError(f"{side}: not a clef predictions sidecar")
        current = json.loads(
            json.dumps({"model": self.model_id, "columns": self.columns, "settings": self.config.settings()})
        )
        changed = [k for k in current if previous.get(k) != current[k]]
        if changed:
            raise UserError(
                f"{side}: the output has other {', '.join(changed)} than this run; "
                "resume with the same model, labels and settings, or use --overwrite"
            )
        return previous


def _frame_total(items: list[_Item], config: PredictConfig, done: dict[str, int]) -> int | None:
    """Frames the run will read (None when unknown: a video without a frame count, or a time window)."""
    total = 0
    for item in items:
        if item.kind != "video":
            total += 0 if item.source in done else 1
            continue
        n = video_frame_count(item.path)
        if n is None or config.start > 0 or config.end is not None:
            return None
        first = done.get(item.source, -1) + 1
        total += len(range(first + (-first) % config.frame_step, n, config.frame_step))
    return total


def model_id(path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Which model made the rows: its sidecar's path, creation time and SHA-256 (the sidecar names the
    weights file and records the config, labels and metrics, so its hash pins the run)."""
    _, sidecar = checkpoint_paths(path)
    return {
        "path": str(sidecar.resolve()),
        "created": meta.get("created"),
        "sidecar_sha256": hashlib.sha256(sidecar.read_bytes()).hexdigest(),
        "labels": meta.get("labels"),
        "task": meta.get("task"),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
