"""Small backbone configs shared by the model, checkpoint and classifier tests."""

from __future__ import annotations

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
SMALL_VIT = dict(image_encoder="vit", vit_width=32, vit_depth=2, vit_heads=2, embed_dim=32)
SMALL_CNN = dict(image_encoder="cnn", cnn_widths=(8, 16), cnn_depth=1, embed_dim=32)

BACKBONE_CASES = {
    "offline-vit": ("offline", SMALL_VIT),
    "offline-cnn": ("offline", SMALL_CNN),
    "clip-tiny": ("clip-vit-b16", TINY_CLIP),
}
