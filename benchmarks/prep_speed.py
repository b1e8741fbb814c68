"""Face preprocessing speed: frames per second of MTCNN detection + 5-point alignment to 224 x 224.

Two measurements, on photos shipped with scikit-image (no data download):

1. *core*: detect + align on in-memory frames, for several batch sizes. Frames: the 512 x 512
   astronaut portrait and a 640 x 480 "video frame" (the astronaut placed on a grey canvas).
2. *end to end*: ``run_prep`` on a folder of JPEG files (decode, detect, align, encode, manifest).

Usage: python benchmarks/prep_speed.py [--device cpu] [--frames 32] [--batch-sizes 1 8 32]
       [--min-face-size 20] [--threads N]
(``--min-face-size`` sets where the image pyramid starts: larger values skip the finest, costliest
levels, which suits datasets whose faces are big, e.g. BP4D.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clef.prep.align import AlignRecipe, align_faces, apply_transform
from clef.prep.mtcnn import MTCNN, DetectorConfig
from clef.prep.pipeline import PrepConfig, run_prep


def frames_of(kind: str, n: int) -> list[np.ndarray]:
    from skimage import data

    portrait = data.astronaut()
    if kind == "portrait 512x512":
        return [portrait] * n
    canvas = np.full((480, 640, 3), 110, np.uint8)
    small = np.asarray(Image.fromarray(portrait).resize((320, 320)))
    canvas[80:400, 160:480] = small
    return [canvas] * n


def core_fps(detector: MTCNN, frames: list[np.ndarray], batch: int, recipe: AlignRecipe) -> float:
    tensors = [torch.from_numpy(f.copy()).permute(2, 0, 1).to(detector.device) for f in frames]
    detector.detect(tensors[:batch])  # warm-up
    if detector.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(tensors), batch):
        chunk = tensors[i : i + batch]
        for image, faces in zip(chunk, detector.detect(chunk), strict=True):
            crops, _ = align_faces(image, faces.landmarks[:1], recipe)
            crops.cpu()
    if detector.device.type == "cuda":
        torch.cuda.synchronize()
    return len(tensors) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--min-face-size", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    detector = MTCNN(config=DetectorConfig(min_face_size=args.min_face_size), device=args.device)
    recipe = AlignRecipe(size=224)
    print(
        f"device={args.device} torch threads={torch.get_num_threads()} min_face_size={args.min_face_size} "
        f"weights={detector.weights.origin}"
    )
    # Alignment accuracy on the astronaut: where her eyes land in the 224 crop vs the template.
    image = torch.from_numpy(frames_of("portrait 512x512", 1)[0].copy()).permute(2, 0, 1).to(detector.device)
    faces = detector.detect([image])[0]
    crops, matrices = align_faces(image, faces.landmarks[:1], recipe)
    target = recipe.points()[:2]
    moved = apply_transform(matrices[0], faces.landmarks[0].cpu().double())[:2]
    again = detector.detect([crops[0]])[0]
    redetected = (again.landmarks[0, :2].cpu().double() - target).norm(dim=1).tolist() if len(again) else []
    print(
        f"astronaut: {len(faces)} face(s); eye distance to template in the 224 crop, px (left, right): "
        f"transformed landmarks {[round(v, 2) for v in (moved - target).norm(dim=1).tolist()]}, "
        f"re-detected on the crop {[round(v, 2) for v in redetected]}"
    )
    for kind in ("portrait 512x512", "video frame 640x480"):
        frames = frames_of(kind, args.frames)
        for batch in args.batch_sizes:
            fps = core_fps(detector, frames, batch, recipe)
            print(f"core  {kind:20s} batch {batch:3d}: {fps:7.1f} frames/s (detect + align to 224)")

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i, frame in enumerate(frames_of("video frame 640x480", args.frames)):
            Image.fromarray(frame).save(src / f"{i:05d}.jpg", quality=90)
        config = PrepConfig(batch_size=max(args.batch_sizes), detector=detector.config)
        summary = run_prep(src, Path(tmp) / "out", config, detector=detector, progress=False)
        print(
            f"end-to-end run_prep on {summary.frames} JPEG files 640x480 (batch {config.batch_size}): "
            f"{summary.frames_per_second:.1f} frames/s, {summary.faces} crops, {summary.misses} misses"
        )


if __name__ == "__main__":
    main()
