"""What a text head costs in stage 2, against the image-only linear row (issue 12, item 5).

A text-head row (N or N + D) embeds every label text through the text tower at each step; a linear
row (I) uses no text. This times the engine's training step for each head on the same random batches
(the image tower, its input size and what of it trains as the built-in world's experiment presets
set them, :class:`clef.experiments.settings.ExperimentConfig`; 12 AU labels, batch 32) and prints
seconds per step and the ratio to the linear row.

    PYTHONPATH=src python benchmarks/stage2_text_cost.py [--steps 20] [--threads 1]
        [--backbone-config '{image_encoder: cnn, image_size: 32}'] [--image-blocks 2] [--text-blocks 1]

``--text-blocks`` is ``trainable.text_blocks`` of the text rows (the presets train the last MiniLM
block and the projection; the earlier blocks are computed once per text). Numbers depend on the
machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import yaml

from clef.engine import EngineConfig, train
from clef.experiments.settings import ExperimentConfig
from clef.finetune import build_finetune_model
from clef.label_space import label_space
from clef.labels import BP4D_AUS
from clef.model import build_model
from clef.run_config import OptimConfig, TrainableConfig, param_groups
from clef.stage2 import MethodConfig, Stage2Step

ROWS = {
    "I (linear)": {"head": "linear", "description_loss": False},
    "N (names)": {"head": "names", "description_loss": False},
    "N + D (names, L_DN)": {"head": "names", "description_loss": True},
}


def seconds_per_step(
    backbone_config: dict, method: dict, image_blocks: int | None, text_blocks: int, steps: int, batch: int
) -> float:
    torch.manual_seed(0)
    clef = build_model("offline", backbone_config, pretrained=True)
    cfg = MethodConfig(task="au", **method)
    text = text_blocks if method["head"] != "linear" else 0
    trainable = TrainableConfig(image_blocks=image_blocks, text_blocks=text)
    model = build_finetune_model(clef, label_space("au", "labels", aus=BP4D_AUS), cfg, "labels", trainable)
    size = clef.preprocess.image_size
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "image": torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g),
            "au": (torch.rand(batch, len(BP4D_AUS), generator=g) > 0.8).float(),
            "au_mask": torch.ones(batch, len(BP4D_AUS), dtype=torch.bool),
        }
        for _ in range(4)
    ]
    step = Stage2Step(cfg, None, torch.Generator().manual_seed(1))
    groups = param_groups(model.clef, OptimConfig(lr_image=1e-4), model.head)
    with tempfile.TemporaryDirectory() as run_dir:
        warm = EngineConfig(steps=2, warmup_steps=1, progress=False, checkpoint_every=10**9)
        train(model, step, groups, batches, warm, run_dir)  # first steps build caches and kernels
    with tempfile.TemporaryDirectory() as run_dir:
        timed = EngineConfig(steps=steps, warmup_steps=1, progress=False, checkpoint_every=10**9)
        start = time.perf_counter()
        train(model, step, groups, batches * (steps // len(batches) + 1), timed, run_dir)
        return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    preset = ExperimentConfig()
    parser.add_argument("--image-blocks", type=int, default=preset.image_trainable_blocks)
    parser.add_argument("--text-blocks", type=int, default=preset.text_trainable_blocks)
    parser.add_argument(
        "--backbone-config", default=yaml.safe_dump(preset.backbone_config, default_flow_style=True)
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = yaml.safe_load(args.backbone_config)
    print(
        f"backbone offline {backbone}, image blocks trained {args.image_blocks}, text blocks "
        f"{args.text_blocks}, batch {args.batch}, {args.steps} steps, {args.threads} thread(s)"
    )
    base = None
    for name, method in ROWS.items():
        s = seconds_per_step(backbone, method, args.image_blocks, args.text_blocks, args.steps, args.batch)
        base = base or s
        print(f"  {name:22s} {s:.3f} s/step   {s / base:.2f}x the linear row")


if __name__ == "__main__":
    main()
