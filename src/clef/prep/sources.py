"""What `clef prep` reads: single images, folder trees of images (BP4D / DISFA frame trees, any
image folder), and video files.

An input is split into *items*, the unit of resumption: one item per image file and one per video.
Each item knows its path relative to the input root, so outputs can mirror the input tree.
Video decoding uses PyAV (the optional ``video`` extra), imported only when a video is opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clef.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
VIDEO_EXTRA_HINT = "reading videos needs PyAV: pip install 'clef-face[video]' (or: pip install av)"


@dataclass(frozen=True)
class SourceItem:
    """One input file. ``kind``: ``"image"`` or ``"video"``; ``rel``: POSIX path relative to the
    input root (the file name itself when the input is a single file)."""

    kind: str
    path: Path
    rel: str


def discover(root: str | Path) -> list[SourceItem]:
    """List the items under ``root`` (a file or a folder, searched recursively), sorted by path.

    Files with other extensions are ignored; hidden files and folders are skipped. Raises
    :class:`UserError` when ``root`` does not exist or holds no image or video.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"input {root} does not exist")
    if root.is_file():
        kind = _kind(root)
        if kind is None:
            raise UserError(
                f"{root} is neither an image ({', '.join(IMAGE_EXTENSIONS)}) "
                f"nor a video ({', '.join(VIDEO_EXTENSIONS)})"
            )
        return [SourceItem(kind, root, root.name)]
    items = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            kind = _kind(path)
            if kind is not None:
                items.append(SourceItem(kind, path, path.relative_to(root).as_posix()))
    if not items:
        raise UserError(f"no images or videos found under {root}")
    return sorted(items, key=lambda item: item.rel)


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB, honouring the EXIF orientation.

    Raises :class:`UserError` naming the file when it cannot be decoded completely (a truncated
    JPEG is an error here, not a half-grey picture).
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit greyscale: PIL's convert("RGB") would clip everything above 255 to white.
                # 32-bit "I" is how older Pillow opens 16-bit PNGs, so it is read as 16-bit too
                # unless its values say otherwise.
                grey = np.asarray(img, dtype=np.float64)
                grey = grey / max(65535.0, float(grey.max()))
                grey = (grey.clip(0, 1) * 255).round().astype(np.uint8)
                return np.repeat(grey[:, :, None], 3, axis=2)
            return np.array(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read image {path}: {err}") from err


def _import_av():
    try:
        import av
    except ImportError:
        raise UserError(VIDEO_EXTRA_HINT) from None
    return av


def video_frame_count(path: str | Path) -> int | None:
    """Number of frames the container declares for its first video stream (None if unknown)."""
    av = _import_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            return int(container.streams.video[0].frames) or None
    except av.FFmpegError:
        return None


@dataclass(frozen=True)
class VideoFrame:
    """One decoded video frame: ``index`` counts decoded frames from 0, ``time`` is its presentation
    time in seconds, ``rgb`` is ``(H, W, 3)`` uint8."""

    index: int
    time: float
    rgb: np.ndarray


def video_frames(
    path: str | Path, step: int = 1, start: float = 0.0, end: float | None = None, first_index: int = 0
) -> Iterator[VideoFrame]:
    """Decode the first video stream of ``path``: every ``step``-th frame (by decoded index) whose
    time lies in ``[start, end]`` seconds (``end`` None: to the last frame) and whose index is at least
    ``first_index`` (a resumed run skips what it has).

    Frames before ``start`` or ``first_index`` are decoded (so indices stay the container's frame
    numbers) but not converted to RGB; decoding stops at the first frame after ``end``. Time is the frame's
    presentation time, or index / average rate when the container gives none.

    Raises :class:`UserError` naming the file when it cannot be opened, has no video stream, or
    fails to decode part-way (frames already yielded stay valid).
    """
    av = _import_av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise UserError(f"cannot open video {path}: {err}") from err
    with container:
        if not container.streams.video:
            raise UserError(f"video {path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        index, decoded = 0, False
        try:
            for frame in container.decode(stream):
                decoded = True
                time = frame.time if frame.time is not None else (index / rate if rate else float("nan"))
                if end is not None and time > end:
                    break
                if index % step == 0 and time >= start and index >= first_index:
                    yield VideoFrame(index, float(time), frame.to_ndarray(format="rgb24"))
                index += 1
        except (av.FFmpegError, OSError) as err:
            raise UserError(f"cannot decode video {path} at frame {index}: {err}") from err
        if not decoded:
            raise UserError(f"video {path} has no decodable frames")


def iter_video(path: str | Path, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame_index, (H, W, 3) uint8 RGB)`` for every ``step``-th frame of ``path``
    (:func:`video_frames` from the first frame to the last)."""
    for frame in video_frames(path, step):
        yield frame.index, frame.rgb


def iter_frames(item: SourceItem, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Frames of an item: ``(0, image)`` for an image, the decoded frames for a video."""
    if item.kind == "image":
        yield 0, read_image(item.path)
    else:
        yield from iter_video(item.path, step)
