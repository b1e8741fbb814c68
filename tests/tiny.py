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

# 6 lab subjects: the world interleaves BP4D's fold parts, so fold 1 has 4 training and 2 test
# subjects; a wild split with every class; one DISFA subject.
TINY_WORLD = WorldConfig(lab_subjects=6, frames_per_video=4, wild_images=80, disfa_subjects=1, disfa_frames=4)
