"""Which from-scratch image encoder should the offline backbone use: the small CNN or the small ViT?

Both are trained the same way on frames of the built-in world (lab domain, 64×64) rendered for
training subjects: image tower -> linear head -> BCE on the 12 BP4D AUs (occurrence = level >= 1),
AdamW, same epochs and batch size. They are compared on frames of *held-out subjects* (mean F1 over
the 12 AUs, threshold 0.5, per epoch), and on speed (training and inference images/s).

This is the "I" setting (image encoder + linear head), the cheapest check of how well an encoder
learns AU cues from this data; it decides the default of ``OfflineConfig.image_encoder``.

Usage: ``PYTHONPATH=src python benchmarks/offline_encoder_choice.py [--epochs 6] [--train-subjects 14]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from clef.labels import ALL_AUS, BP4D_AUS
from clef.metrics import au_f1
from clef.model.offline import OfflineConfig, build_image_tower
from clef.synth.export import au_levels
from clef.synth.render import render_face
from clef.synth.world import ACTIVITIES, WorldConfig, lab_subjects, make_video

AU_COLUMNS = [ALL_AUS.index(a) for a in BP4D_AUS]


def render_split(world: WorldConfig, subject_indices: list[int], frames: int, stride: int):
    """Every ``stride``-th frame of each (subject, activity) video.

    Returns (N, 3, S, S) floats normalised as ``OfflineConfig`` expects and (N, 12) 0/1 AU labels.
    """
    subjects = lab_subjects(world)
    images, labels = [], []
    for s in subject_indices:
        for activity in ACTIVITIES:
            video = make_video(world, subjects[s], s, activity, frames)
            for t in range(0, frames, stride):
                rng = np.random.default_rng([*video.seed_key, 2, t])  # as clef.synth.export.render_video
                image = render_face(
                    video.subject.identity,
                    video.au[t],
                    video.nuisance[t],
                    world.size,
                    video.unilateral[t],
                    rng,
                )
                images.append(image)
                labels.append(au_levels(video.au[t])[AU_COLUMNS] >= 1)
    x = (
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    )  # OfflineConfig mean/std 0.5
    return x.contiguous(), torch.from_numpy(np.stack(labels).astype(np.float32))


def predict(tower: nn.Module, head: nn.Linear, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    tower.eval()
    with torch.inference_mode():
        return torch.cat([torch.sigmoid(head(tower(x[i : i + batch]))) for i in range(0, len(x), batch)])


def run(encoder: str, data, epochs: int, batch: int, lr: float, seed: int) -> dict:
    (x_train, y_train), (x_test, y_test) = data
    torch.manual_seed(seed)
    cfg = OfflineConfig(image_encoder=encoder)
    tower = build_image_tower(cfg)
    head = nn.Linear(cfg.embed_dim, y_train.shape[1])
    params = [*tower.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    steps = epochs * (len(x_train) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    # Positive weights against AU imbalance (neg/pos on the training frames, capped).
    pos = y_train.mean(0).clamp(min=1e-3)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=((1 - pos) / pos).clamp(max=10.0))
    history, train_time = [], 0.0
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        tower.train()
        order = torch.randperm(len(x_train), generator=gen)
        start = time.perf_counter()
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            loss = loss_fn(head(tower(x_train[idx])), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        train_time += time.perf_counter() - start
        start = time.perf_counter()
        prob = predict(tower, head, x_test)
        infer_time = time.perf_counter() - start
        f1 = au_f1((prob >= 0.5).numpy().astype(int), y_test.numpy().astype(int))
        history.append(float(np.mean(f1)))
        print(
            f"  {encoder} epoch {epoch + 1}: loss {loss.item():.3f}  held-out mean F1 {history[-1]:.3f}",
            flush=True,
        )
    return {
        "encoder": encoder,
        "params (M)": sum(p.numel() for p in tower.parameters()) / 1e6,
        "f1 per epoch": history,
        "per-AU F1": dict(zip(BP4D_AUS, f1.tolist(), strict=True)),
        "train images/s": epochs * (len(x_train) // batch) * batch / train_time,
        "inference images/s": len(x_test) / infer_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-subjects", type=int, default=14)
    parser.add_argument("--test-subjects", type=int, default=7)
    parser.add_argument("--frames", type=int, default=120, help="frames simulated per video")
    parser.add_argument("--stride", type=int, default=6, help="keep every n-th frame")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoders", nargs="+", default=["cnn", "vit"])
    args = parser.parse_args()
    world = WorldConfig(seed=args.seed)
    train_ids = list(range(args.train_subjects))
    test_ids = list(range(args.train_subjects, args.train_subjects + args.test_subjects))
    start = time.perf_counter()
    data = (
        render_split(world, train_ids, args.frames, args.stride),
        render_split(world, test_ids, args.frames, args.stride),
    )
    (x_train, y_train), (x_test, y_test) = data
    print(
        f"rendered {len(x_train)} training frames ({len(train_ids)} subjects) and {len(x_test)} held-out "
        f"frames ({len(test_ids)} subjects) in {time.perf_counter() - start:.0f} s; "
        f"torch threads {torch.get_num_threads()}"
    )
    rates = y_test.mean(0).round(decimals=2).tolist()
    print(
        "AU base rates (held-out): "
        + " ".join(f"AU{a}:{r:.2f}" for a, r in zip(BP4D_AUS, rates, strict=True))
    )
    results = [run(e, data, args.epochs, args.batch, args.lr, args.seed) for e in args.encoders]
    print()
    print(f"{'encoder':<8}{'params M':>9}{'F1 last':>9}{'F1 best':>9}{'train img/s':>13}{'infer img/s':>13}")
    for r in results:
        f1 = r["f1 per epoch"]
        print(
            f"{r['encoder']:<8}{r['params (M)']:>9.2f}{f1[-1]:>9.3f}{max(f1):>9.3f}"
            f"{r['train images/s']:>13.1f}{r['inference images/s']:>13.1f}"
        )
    for r in results:
        print(f"{r['encoder']} per-AU F1: " + " ".join(f"AU{a}:{v:.2f}" for a, v in r["per-AU F1"].items()))


if __name__ == "__main__":
    main()
