"""The CLEF dual-encoder model (docs/method.md §2), its backbones and text classifiers.

Import cost matters for the CLI, so transformers is imported only when a backbone is built.
"""

from clef.model.backbones import BACKBONES, DEFAULT_BACKBONE, backbone_config, build_model, get_backbone
from clef.model.classifier import build_text_classifier, fill_templates
from clef.model.clip import ClipConfig
from clef.model.model import MAX_SCALE, ClefModel, Preprocess, Tower
from clef.model.offline import OfflineConfig

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "MAX_SCALE",
    "ClefModel",
    "ClipConfig",
    "OfflineConfig",
    "Preprocess",
    "Tower",
    "backbone_config",
    "build_model",
    "build_text_classifier",
    "fill_templates",
    "get_backbone",
]
