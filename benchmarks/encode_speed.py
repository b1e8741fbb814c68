"""Encode throughput of the backbones on this machine's CPU (random weights; speed only).

Prints images/s and texts/s for inference (``torch.inference_mode``) and images/s for a training
step of the image tower (forward + backward), per backbone:

- ``offline`` with each image encoder (CNN, ViT) at 64×64, MiniLM text tower;
- ``clip-vit-b16`` at 224×224 (real ViT-B/16 sizes, random weights).

Usage: ``PYTHONPATH=src python benchmarks/encode_speed.py [--threads N] [--seconds S]``
"""

from __future__ import annotations

import argparse
import time

import torch

from clef.model import build_model

PROMPT = "a photo of a person with the corners of the lips pulled back and up toward the cheekbones."


def _rate(fn, items_per_call: int, seconds: float) -> float:
    fn()  # warm-up (allocations, kernel selection)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 2:
            return calls * items_per_call / elapsed


def measure(name: str, config: dict, image_batch: int, text_batch: int, seconds: float) -> dict[str, float]:
    model = build_model(name, config, pretrained=False).eval()
    size = model.preprocess.image_size
    images = torch.randn(image_batch, 3, size, size)
    tokens = model.tokenize([PROMPT] * text_batch)

    def encode_images():
        with torch.inference_mode():
            model.encode_image(images)

    def encode_texts():
        with torch.inference_mode():
            model.encode_text(tokens)

    model.train()

    def train_images():
        model.zero_grad(set_to_none=True)
        model.encode_image(images).sum().backward()

    out = {"train images/s": _rate(train_images, image_batch, seconds)}
    model.eval()
    out["images/s"] = _rate(encode_images, image_batch, seconds)
    out["texts/s"] = _rate(encode_texts, text_batch, seconds)
    out["image params (M)"] = sum(p.numel() for p in model.image_tower.parameters()) / 1e6
    out["text params (M)"] = sum(p.numel() for p in model.text_tower.parameters()) / 1e6
    out["tokens/text"] = tokens["input_ids"].shape[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = [
        ("offline (cnn, 64 px)", "offline", {"image_encoder": "cnn"}, 64, 64),
        ("offline (vit, 64 px)", "offline", {"image_encoder": "vit"}, 64, 64),
        ("clip-vit-b16 (224 px)", "clip-vit-b16", {}, 8, 64),
    ]
    print(f"torch {torch.__version__}, {args.threads} threads, batch sizes: image/text as listed")
    columns = ("img batch", "images/s", "train img/s", "texts/s", "tok/text", "img M", "txt M")
    print(f"{'backbone':<24}" + "".join(f"{c:>12}" for c in columns))
    for label, name, config, image_batch, text_batch in cases:
        r = measure(name, config, image_batch, text_batch, args.seconds)
        values = (image_batch, r["images/s"], r["train images/s"], r["texts/s"], r["tokens/text"])
        values += (r["image params (M)"], r["text params (M)"])
        print(
            f"{label:<24}" + "".join(f"{v:>12.1f}" if isinstance(v, float) else f"{v:>12}" for v in values),
            flush=True,
        )


if __name__ == "__main__":
    main()
