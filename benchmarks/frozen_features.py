"""What the offline image towers' frozen features make linearly available on the built-in world.

Renders (or reuses) the demo's world, then probes each tower's embedding (``clef.probe``: logistic
regressions fitted on fold 1's 28 training subjects, scored on its 13 held-out ones; every 3rd frame)
for AU F1, expression accuracy and subject identity, and prints the embedding spread. No training:
the from-scratch CNN has random weights, the face ResNet dlib's, both a new random projection.

    PYTHONPATH=src python benchmarks/frozen_features.py [--world runs/demo-world]

One world seed, so differences under ~0.03 mean little (docs/model.md has our numbers).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from clef.experiments.demo import DEMO_PRESETS
from clef.experiments.world import ensure_world
from clef.model import build_model
from clef.probe import ProbeConfig, embedding_spread, extract_features, load_probe_records, probe_model

TOWERS = {
    "from-scratch CNN, random weights (32 px)": {"image_encoder": "cnn", "image_size": 32},
    "face-resnet, pretrained (112 px)": {"image_encoder": "face-resnet", "image_size": 112},
    "face-resnet, pretrained (128 px)": {"image_encoder": "face-resnet", "image_size": 128},
    "face-resnet, pretrained (150 px)": {"image_encoder": "face-resnet", "image_size": 150},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("runs/demo-world"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = ensure_world(DEMO_PRESETS["default"].world, args.world, print, progress=False)
    cfg = ProbeConfig(root=str(world / "bp4d"), fold=1, frame_stride=3, progress=False)
    records = load_probe_records(cfg)
    print(
        "| image tower (input) | AU mean F1 | expression accuracy | subject-ID (LR / 1-NN) | mean cos | s |"
    )
    print("|---|---|---|---|---|---|")
    for name, config in TOWERS.items():
        start = time.perf_counter()
        torch.manual_seed(0)
        model = build_model("offline", config)
        r = probe_model(model, cfg, records=records)
        spread = embedding_spread(extract_features(model, records[1].iloc[::4], progress=False))
        seconds = time.perf_counter() - start
        print(
            f"| {name} | {r.au_f1:.3f} | {r.expression_accuracy:.3f} | {r.subject_accuracy:.2f} / "
            f"{r.subject_nn_accuracy:.2f} | {spread['mean_cosine']:.3f} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
