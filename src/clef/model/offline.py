"""The offline default backbone: an image encoder trained from scratch + pretrained MiniLM text encoder.

No CLIP weights exist offline (docs/model.md, "Backbones"), so the image tower starts from random
weights and learns from the data (on this machine: the built-in synthetic world at 64×64), while the
text tower is the pretrained all-MiniLM-L6-v2 sentence encoder, so texts are meaningful from the start.

The image encoder is a config value (``image_encoder = "cnn" | "vit"``); the default (CNN) was chosen by
``benchmarks/offline_encoder_choice.py`` (numbers in ``reports/offline_encoder_choice.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from clef.errors import UserError
from clef.model.image_encoders import SmallCNN, SmallViT
from clef.model.minilm import MiniLMTower, minilm_tokenizer
from clef.model.model import ClefModel, Preprocess, Tower

IMAGE_ENCODERS = ("vit", "cnn")


@dataclass(frozen=True)
class OfflineConfig:
    """Sizes of the offline backbone; every field can be overridden from YAML.

    ``vit_*`` fields size the ViT (``image_encoder="vit"``), ``cnn_*`` the CNN; the other set is unused.
    """

    # CNN: held-out AU F1 0.51 after 8 epochs vs 0.20 for the ViT after 6, and ~1.8x faster training
    # on CPU (reports/offline_encoder_choice.md).
    image_encoder: str = "cnn"
    image_size: int = 64
    embed_dim: int = 256
    vit_patch_size: int = 8
    vit_width: int = 192
    vit_depth: int = 6
    vit_heads: int = 3
    vit_mlp_ratio: float = 4.0
    cnn_widths: tuple[int, ...] = (32, 64, 128, 256)
    cnn_depth: int = 1
    # On CPU the CNN runs a batch this many images at a time (same outputs; faster, since a chunk's
    # activations stay in cache: see SmallCNN); 0 = the whole batch in one call.
    cnn_chunk: int = 32
    text_max_length: int = 128
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.image_encoder not in IMAGE_ENCODERS:
            raise UserError(
                f"offline image_encoder {self.image_encoder!r} is unknown; valid: {', '.join(IMAGE_ENCODERS)}"
            )
        if self.image_encoder == "vit":
            if self.image_size % self.vit_patch_size:
                raise UserError(
                    f"image_size {self.image_size} is not a multiple of vit_patch_size {self.vit_patch_size}"
                )
            if self.vit_width % self.vit_heads:
                raise UserError(f"vit_width {self.vit_width} is not divisible by vit_heads {self.vit_heads}")
        if not self.cnn_widths or self.cnn_depth < 1:
            raise UserError("cnn_widths must be non-empty and cnn_depth at least 1")
        if self.cnn_chunk < 0:
            raise UserError(f"cnn_chunk must be >= 0 (0: no chunking), got {self.cnn_chunk}")


def build_image_tower(cfg: OfflineConfig) -> Tower:
    """The configured from-scratch image tower (random init)."""
    if cfg.image_encoder == "vit":
        return SmallViT(
            image_size=cfg.image_size,
            patch_size=cfg.vit_patch_size,
            width=cfg.vit_width,
            depth=cfg.vit_depth,
            heads=cfg.vit_heads,
            mlp_ratio=cfg.vit_mlp_ratio,
            embed_dim=cfg.embed_dim,
        )
    return SmallCNN(
        widths=tuple(cfg.cnn_widths), depth=cfg.cnn_depth, embed_dim=cfg.embed_dim, chunk=cfg.cnn_chunk
    )


def build_offline_model(cfg: OfflineConfig, pretrained: bool = True) -> ClefModel:
    """A :class:`ClefModel` with a from-scratch image tower and MiniLM text tower.

    ``pretrained=False`` builds MiniLM's architecture without its weights (a checkpoint follows).
    """
    return ClefModel(
        image_tower=build_image_tower(cfg),
        text_tower=MiniLMTower(cfg.embed_dim, pretrained=pretrained),
        tokenizer=minilm_tokenizer(cfg.text_max_length),
        preprocess=Preprocess(cfg.image_size, tuple(cfg.mean), tuple(cfg.std)),
        backbone="offline",
        backbone_config=cfg,
    )
