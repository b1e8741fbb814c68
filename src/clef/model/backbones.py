"""Backbone registry: the names users type (``clef list backbones`` prints them).

Each entry has a frozen config dataclass (its sizes, its weight source) and a builder. Configs come
from YAML/JSON as plain dicts through :func:`backbone_config`, which rejects unknown keys by naming
the valid ones, so a custom image size or depth is a config change, not code.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clef.errors import UserError
from clef.model.clip import ClipConfig, build_clip_model
from clef.model.model import ClefModel
from clef.model.offline import OfflineConfig, build_offline_model


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: ``build(config, pretrained)`` returns a :class:`ClefModel`."""

    name: str
    description: str
    config_cls: type
    build: Callable[[Any, bool], ClefModel]


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "offline",
            "image encoder from scratch (small CNN or ViT, 64 px) or dlib's pretrained face ResNet "
            "(face-resnet, 103-150 px) + pretrained MiniLM-L6 text encoder",
            OfflineConfig,
            build_offline_model,
        ),
        BackboneSpec(
            "clip-vit-b16",
            "the paper's CLIP ViT-B/16 (224 px); weights: Hugging Face folder, hub id, or OpenAI/FaRL .pt",
            ClipConfig,
            build_clip_model,
        ),
    )
}
DEFAULT_BACKBONE = "offline"


def get_backbone(name: str) -> BackboneSpec:
    """The registry entry for ``name``; an unknown name raises :class:`UserError` listing valid ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise UserError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}") from None


def backbone_config(name: str, overrides: Mapping[str, Any] | Any | None = None) -> Any:
    """The config dataclass of backbone ``name`` with ``overrides`` (a dict, or already a config).

    Lists become tuples where the field is a tuple. Unknown keys raise :class:`UserError` naming
    the valid ones.
    """
    cls = get_backbone(name).config_cls
    if overrides is None:
        return cls()
    if isinstance(overrides, cls):
        return overrides
    if not isinstance(overrides, Mapping):
        raise UserError(f"backbone {name!r} config must be a mapping, got {type(overrides).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise UserError(
            f"unknown key(s) {', '.join(unknown)} for backbone {name!r}; valid keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in overrides.items():
        values[key] = tuple(value) if _is_tuple_hint(hints[key]) and isinstance(value, list) else value
    return cls(**values)


def _is_tuple_hint(hint: Any) -> bool:
    """True for ``tuple[...]`` and ``tuple[...] | None``."""
    if typing.get_origin(hint) is tuple:
        return True
    return any(typing.get_origin(arg) is tuple for arg in typing.get_args(hint))


def build_model(
    name: str = DEFAULT_BACKBONE, config: Mapping[str, Any] | Any | None = None, pretrained: bool = True
) -> ClefModel:
    """Build backbone ``name`` with ``config`` overrides.

    ``pretrained=False`` builds the architecture only (random weights, nothing downloaded or read):
    the path :func:`clef.checkpoint.load_checkpoint` takes before it loads the saved weights.
    """
    spec = get_backbone(name)
    return spec.build(backbone_config(name, config), pretrained)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A backbone config as JSON-ready data (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
