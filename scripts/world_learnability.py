"""How fast does a plain supervised CNN from scratch learn the world's wild expressions?

A deliberately plain loop (no clef engine, no augmentation but flips, constant learning rate) used to
calibrate the built-in world (reports/world_calibration.md): the offline backbone's image tower + a
linear layer, trained with cross-entropy on the RAF-DB-layout training split; prints training and
test accuracy every 100 steps next to the majority-class rate.

    clef synth --out /tmp/w --domains lab,wild --subjects 41 --frames 12 --wild-images 1600 --quiet
    python scripts/world_learnability.py --root /tmp/w/rafdb --steps 600 --size 32
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clef.data import load_dataset
from clef.model import build_model


def load(paths, labels, classes, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in paths])
    return torch.tensor(images).permute(0, 3, 1, 2).float() / 255.0, torch.tensor(
        [classes.index(e) for e in labels]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a RAF-DB-layout root (e.g. the world's rafdb/)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    records = load_dataset("rafdb", args.root)
    classes = sorted(records.expression.unique())
    train, test = records[records.split == "train"], records[records.split == "test"]
    x_train, y_train = load(train.path, train.expression, classes, args.size)
    x_test, y_test = load(test.path, test.expression, classes, args.size)
    mean = x_train.mean((0, 2, 3), keepdim=True)
    std = x_train.std((0, 2, 3), keepdim=True)

    encoder = build_model("offline", {"image_encoder": "cnn", "cnn_widths": [16, 32, 64, 128], "image_size": args.size}).image_tower
    head = torch.nn.Linear(encoder.embed_dim, len(classes))
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=args.lr, weight_decay=0.05)
    majority = float((y_test == torch.mode(y_train).values).float().mean())
    start = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, len(x_train), (args.batch,))
        x = (x_train[idx] - mean) / std
        x = torch.where(torch.rand(args.batch, 1, 1, 1) < 0.5, x.flip(3), x)
        loss = F.cross_entropy(head(encoder(x)), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps - 1:
            with torch.no_grad():
                test_acc = float((head(encoder((x_test - mean) / std)).argmax(1) == y_test).float().mean())
                train_acc = float(
                    (head(encoder((x_train[:400] - mean) / std)).argmax(1) == y_train[:400]).float().mean()
                )
            print(
                f"step {step:4d}  loss {loss.item():.3f}  train acc {train_acc:.3f}  test acc {test_acc:.3f}"
                f"  (majority {majority:.3f}, {time.perf_counter() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
