"""`clef predict` speed and memory: batched prediction against a one-image-at-a-time loop, and peak
memory on a short and a long video.

1. *speed*: images/s on a folder of aligned 64 px crops (rendered by the built-in world), for
   ``Predictor.run`` (what `clef predict --aligned` runs: loader worker decoding, batches of 64,
   rows written to a CSV) and for a naive loop over the same files with the same model (decode,
   resize, one forward pass per image, no file written). The model is the offline default backbone
   (residual CNN 32-64-128-256 at 64 px + MiniLM) with an AU head over BP4D's 12 AUs; its weights
   are untrained (speed does not depend on them). Target: >= 3x. Also printed: ``model(x)`` per
   image (which embeds the label texts again for every image) and the image tower alone on random
   batches, the ceiling for any pipeline with this model on this CPU.
2. *memory*: peak resident memory (``ru_maxrss``) of a fresh process running ``Predictor.run`` with
   ``aligned`` on a synthetic video, for its first N frames and for all of them (default 1,000 vs
   20,000); the decoding worker's peak is reported apart. Target: flat (within 10 %).

Usage: python benchmarks/predict_speed.py [--images 2000] [--frames 1000 20000] [--threads 1]
       [--workers 1] [--batch-size 64] [--skip-memory]
Timings on a shared machine vary with its load; the load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def make_model(folder: Path) -> Path:
    """An untrained fine-tuned model (offline default backbone, 12 BP4D AUs) saved as RUN_DIR/model."""
    import torch

    from clef.finetuned import FineTuneModel, save_finetuned
    from clef.label_space import au_label_space
    from clef.labels import BP4D_AUS
    from clef.model import build_model
    from clef.prompts import load_prompt_set

    torch.manual_seed(0)
    prompts = load_prompt_set("labels")
    model = FineTuneModel(
        build_model("offline"), au_label_space(prompts, BP4D_AUS), "names", prompts.name_templates
    )
    save_finetuned(folder / "model", model, prompt_set="labels")
    return folder / "model"


def faces(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    from clef.synth.identity import sample_identity
    from clef.synth.render import render_face, sample_nuisance

    rng = np.random.default_rng(seed)
    identities = [sample_identity(rng, "lab") for _ in range(min(n, 50))]
    au = np.zeros(17)
    return [
        render_face(identities[k % len(identities)], au, sample_nuisance(rng, "lab"), size) for k in range(n)
    ]


def write_crops(folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k, face in enumerate(faces(n)):
        Image.fromarray(face).save(folder / f"{k:06d}.jpg", quality=95)
    return folder


def naive_loop(model_path: Path, folder: Path, reuse_prototypes: bool = True, limit: int | None = None):
    """Seconds and count: every file decoded, resized and scored alone. ``reuse_prototypes``: the label
    prototypes are computed once; else ``model(x)`` per image, which embeds the label texts again for
    every image (the model's forward is written for batches)."""
    import torch
    from PIL import Image

    from clef.augment import to_float
    from clef.data.dataset import square_image
    from clef.finetuned import load_finetuned
    from clef.prep.sources import read_image

    model, _ = load_finetuned(model_path)
    size = model.clef.preprocess.image_size
    paths = sorted(folder.glob("*.jpg"))[:limit]
    start = time.perf_counter()
    with torch.no_grad():
        prototypes = model.prototypes() if reuse_prototypes else None
        for path in paths:
            image = square_image(Image.fromarray(read_image(path)), size)
            x = model.clef.preprocess.normalize(to_float(torch.from_numpy(image).permute(2, 0, 1)[None]))
            if reuse_prototypes:
                logits = model.logits(model.clef.encode_image(x), prototypes)
            else:
                logits = model(x)
            model.space.probabilities(logits)
    return time.perf_counter() - start, len(paths)


def forward_ceiling(model_path: Path, batch: int, seconds: float = 3.0) -> float:
    """Images/s of the image tower alone on random batches: what no pipeline can beat."""
    import torch

    from clef.finetuned import load_finetuned

    model, _ = load_finetuned(model_path)
    size = model.clef.preprocess.image_size
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        model.clef.encode_image(x)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            model.clef.encode_image(x)
            n += batch
    return n / (time.perf_counter() - start)


def batched_run(model_path: Path, folder: Path, out: Path, workers: int, batch: int) -> tuple[float, int]:
    from clef.predict import PredictConfig, Predictor

    predictor = Predictor(
        model_path, PredictConfig(aligned=True, batch_size=batch, workers=workers), device="cpu"
    )
    start = time.perf_counter()
    summary = predictor.run([folder], out, overwrite=True)
    return time.perf_counter() - start, summary.rows


def write_video(path: Path, n: int, rate: int = 25) -> Path:
    import av

    pool = faces(64)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(pool[(k // 5) % len(pool)], format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


CHILD = """
import json, resource, sys, time
from clef.predict import PredictConfig, Predictor
model, video, out, frames, workers, batch = sys.argv[1:7]
end = (int(frames) - 0.5) / 25.0  # the first N frames of the 25 frames/s video
config = PredictConfig(aligned=True, batch_size=int(batch), workers=int(workers), end=end)
predictor = Predictor(model, config, device="cpu")
start = time.perf_counter()
summary = predictor.run([video], out, overwrite=True)
print(json.dumps({"rows": summary.rows, "seconds": time.perf_counter() - start,
    "main_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "workers_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def peak_memory(
    model: Path, video: Path, out: Path, frames: int, workers: int, batch: int, threads: int
) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": str(threads),
    }
    args = [
        sys.executable,
        "-c",
        CHILD,
        str(model),
        str(video),
        str(out),
        str(frames),
        str(workers),
        str(batch),
    ]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--frames", type=int, nargs=2, default=(1000, 20000))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--workers", type=int, default=1, help="decoding workers of the batched run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_model(tmp)
        crops = write_crops(tmp / "crops", args.images)
        forward_s, forward_n = naive_loop(model, crops, reuse_prototypes=False, limit=50)
        naive_s, n = naive_loop(model, crops)
        run_s, rows = batched_run(model, crops, tmp / "pred.csv", args.workers, args.batch_size)
        ceiling = forward_ceiling(model, args.batch_size)
        assert rows == n, (rows, n)
        naive_rate, run_rate = n / naive_s, n / run_s
        print(f"speed, {n} aligned 64 px crops on CPU (images/s):")
        print(f"  naive loop, model(x) per image (label texts re-embedded) {forward_n / forward_s:8.1f}")
        print(f"  naive loop, one image per forward, prototypes once      {naive_rate:8.1f}")
        print(
            f"  Predictor.run (batches of {args.batch_size}, {args.workers} decoding worker, CSV)"
            f"  {run_rate:8.1f}  = {run_rate / naive_rate:.1f}x the naive loop"
        )
        print(
            f"  image tower alone on random batches of {args.batch_size}             {ceiling:8.1f}"
            f"  (the ceiling; Predictor.run reaches {run_rate / ceiling:.0%} of it)"
        )
        if args.skip_memory:
            return
        short, long = args.frames
        start = time.perf_counter()
        video = write_video(tmp / "long.mp4", long)
        print(f"memory: a {long}-frame 64 px video written in {time.perf_counter() - start:.0f} s")
        results = {}
        for frames in (short, long):
            results[frames] = peak_memory(
                model, video, tmp / f"v{frames}.csv", frames, args.workers, args.batch_size, args.threads
            )
            r = results[frames]
            print(
                f"  first {frames:6d} frames: {r['rows']:6d} rows in {r['seconds']:6.1f} s; peak RSS main "
                f"{r['main_kib'] / 1024:7.1f} MiB, decoding worker {r['workers_kib'] / 1024:7.1f} MiB"
            )
        ratio = results[long]["main_kib"] / results[short]["main_kib"]
        print(f"  main-process peak at {long} / at {short} frames: {ratio:.3f}")
        print(f"load average {os.getloadavg()[0]:.2f} after the run")


if __name__ == "__main__":
    main()
