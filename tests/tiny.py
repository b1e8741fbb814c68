"""Tiny configurations every test shares: backbones of the real architectures at toy size (random
weights, nothing read or downloaded) and the smallest built-in world that has every fold part.

Fixtures built from them live in ``tests/conftest.py``.
"""

from __future__ import annotations

from clef.synth.world import WorldConfig

# A CLIP with the real tokenizer and vocabulary but 2 tiny layers per tower.
TINY_CLIP = dict(
    image_size=32,
    patch_size=8,
    vision_width=32,
    vision_layers=2,
    vision_heads=2,
    vision_intermediate=64,
    text_width=32,
    text_layers=2,
    text_heads=2,
    text_intermediate=64,
    embed_dim=16,
)
# The same as a command-line override value (YAML flow mapping).
TINY_CLIP_YAML = "{" + ", ".join(f"{k}: {v}" for k, v in TINY_CLIP.items()) + "}"
SMALL_VIT = dict(image_encoder="vit", vit_width=32, vit_depth=2, vit_heads=2, embed_dim=32)
SMALL_CNN = dict(image_encoder="cnn", cnn_widths=(8, 16), cnn_depth=1, embed_dim=32)

BACKBONE_CASES = {
    "offline-vit": ("offline", SMALL_VIT),
    "offline-cnn": ("offline", SMALL_CNN),
    "clip-tiny": ("clip-vit-b16", TINY_CLIP),
}

# Fine-tuning overrides for a toy CLIP trained 2 steps (wiring only), and for the contrast-set model
# that learns AU12 and the brow AUs (tests/conftest.py: contrast_model).
TINY_FINETUNE = [
    "init.backbone=clip-vit-b16",
    f"init.backbone_config={TINY_CLIP_YAML}",
    "init.pretrained=false",
    "data.batch_size=16",
    "engine.steps=2",
    "engine.warmup_steps=1",
]
CONTRAST_FINETUNE = [
    "init.backbone=offline",
    "init.backbone_config={image_encoder: cnn, cnn_widths: [16, 32, 64], cnn_depth: 1, embed_dim: 32, "
    "image_size: 32}",
    "trainable.text_blocks=0",
    "data.aus=[1, 2, 4, 12]",
    "data.batch_size=32",
    "optim.lr_image=3e-3",
    "optim.lr_other=3e-3",
    "engine.steps=700",
    "engine.warmup_steps=10",
]

# 6 lab subjects: the world interleaves BP4D's fold parts, so fold 1 has 4 training and 2 test
# subjects; a wild split with every class; one DISFA subject.
TINY_WORLD = WorldConfig(lab_subjects=6, frames_per_video=4, wild_images=80, disfa_subjects=1, disfa_frames=4)


def stage2_batch(b: int = 6, size: int = 32, j: int = 4, c: int = 3) -> dict:
    """A seeded stage-2 batch of ``b`` random uint8 images (``size`` px) with ``j`` AU targets (about
    20 % uncoded) and expression indices over ``c`` classes, as :class:`clef.data.dataset.ImageRecords`
    collates them."""
    import torch

    g = torch.Generator().manual_seed(1)
    mask = torch.rand(b, j, generator=g) > 0.2
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "au": (torch.rand(b, j, generator=g) > 0.6).float() * mask,
        "au_mask": mask,
        "expression": torch.arange(b) % c,
    }


def tiny_pretrain_argv(root, run_dir, *extra: str, steps: int = 4) -> list[str]:
    """``clef pretrain`` on the tiny world's lab domain at ``root``: a small CNN, a frozen MiniLM of
    random weights (no 90 MB read), 2 frames per activity, a checkpoint every 2 steps, one log line
    per step; ``extra`` overrides or options follow."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    return [
        "pretrain",
        "--config",
        str(repo / "configs" / "pretrain" / "synth.yaml"),
        f"data.root={root}",
        f"run_dir={run_dir}",
        f"engine.steps={steps}",
        "engine.warmup_steps=1",
        "engine.log_every=1",
        "engine.checkpoint_every=2",
        "engine.progress=false",
        "data.fold=null",
        "data.frames_per_activity=2",
        "data.frame_stride=2",
        "data.workers=0",
        "init.backbone_config={image_encoder: cnn, cnn_widths: [8, 16]}",
        "trainable.text_blocks=0",
        "init.pretrained=false",
        *extra,
    ]
