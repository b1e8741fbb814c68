"""The configuration vocabulary both stage programs share, defined once.

Every training run (``clef pretrain``, ``clef finetune``) has the same top-level keys for the same
ideas (docs/training.md lists them all):

* ``run_dir``: the run folder (``{fold}`` in it is replaced by ``data.fold``);
* ``device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``;
* ``seed``;
* ``prompt_set``: the texts (stage 1: activity descriptions; stage 2: label names, descriptions,
  templates), a built-in name or a YAML file;
* ``init`` (:class:`InitConfig`): where the weights come from (a backbone, or a clef checkpoint);
* ``trainable`` (:class:`TrainableConfig`): how much of each tower trains — the one meaning of
  "frozen" in the project: a tower with no trainable parameter;
* ``optim`` (:class:`OptimConfig`): the peak learning rate of each parameter group;
* ``engine`` (:class:`clef.engine.EngineConfig`): steps, schedule, checkpoints, logging;
* ``augment`` (:class:`clef.augment.AugmentConfig`).

Stage-specific keys live in ``data``, ``loss`` (stage 1) and ``method`` (stage 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from clef.config import require_number
from clef.engine import ParamGroup
from clef.errors import UserError
from clef.model import ClefModel

__all__ = [
    "InitConfig",
    "TrainableConfig",
    "OptimConfig",
    "resolve_device",
    "fill_fold",
    "build_initial_model",
    "apply_trainable",
    "param_groups",
]


@dataclass(frozen=True)
class InitConfig:
    """Where a run's weights come from.

    ``checkpoint`` set: a clef checkpoint (``NAME`` / ``NAME.safetensors`` / ``NAME.json``), e.g. a
    stage-1 run's ``stage1``; ``{fold}`` in it is replaced by ``data.fold`` (one stage-1 run per fold).
    Its sidecar rebuilds its own architecture, so the backbone fields are then ignored.
    ``checkpoint`` empty: build ``backbone`` with ``backbone_config`` overrides; ``pretrained`` loads
    the backbone's own weights where it has any (offline: the pretrained image tower and MiniLM;
    CLIP/FaRL: ``backbone_config.weights``); ``pretrained: false`` is everything from scratch.
    """

    checkpoint: str | None = None
    backbone: str = "offline"
    backbone_config: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = True


@dataclass(frozen=True)
class TrainableConfig:
    """How much of each tower trains: ``null`` all of it; ``k`` only its last k blocks and its head
    (final norm, pooling, projection); ``0`` none of it (the tower is frozen, kept in eval mode, and
    its text embeddings are cached). Blocks are the towers' repeated units (ViT / MiniLM layers,
    CNN stages)."""

    image_blocks: int | None = None
    text_blocks: int | None = None

    def __post_init__(self) -> None:
        for name in ("image_blocks", "text_blocks"):
            if getattr(self, name) is not None:
                require_number(name, getattr(self, name), integer=True, at_least=0)


@dataclass(frozen=True)
class OptimConfig:
    """Peak learning rates per parameter group (the engine's schedule scales them per step).

    ``image``: the image encoder body; ``text``: the text encoder body (smaller, docs/method.md §4);
    ``other``: both projections into the shared space and the logit scale; ``head``: stage 2's per-AU
    biases or linear head (stage 1 has no head and ignores it).
    """

    lr_image: float = 1e-3
    lr_text: float = 1e-5
    lr_other: float = 1e-3
    lr_head: float = 1e-2

    def __post_init__(self) -> None:
        # A zero learning rate leaves a group where it is; a negative or NaN one is never meant.
        for key in ("lr_image", "lr_text", "lr_other", "lr_head"):
            require_number(key, getattr(self, key), at_least=0)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; other names are checked against this machine.

    Raises:
        UserError: an unknown device string or a device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"device {name!r} is not a device; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"device {name!r}: this machine has no CUDA device; use device=cpu or auto")
        if device.index is not None and device.index >= count:
            raise UserError(
                f"device {name!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
            )
    elif device.type != "cpu":
        raise UserError(f"device {name!r} is not supported; valid: auto, cpu, cuda, cuda:N")
    return device


def fill_fold(path: str, fold: int | None, key: str) -> str:
    """``path`` with ``{fold}`` replaced by ``fold``.

    Raises:
        UserError: ``{fold}`` in ``path`` (config key ``key``) but no fold is set.
    """
    if "{fold}" not in path:
        return path
    if fold is None:
        raise UserError(f"{key} {path!r} contains {{fold}} but data.fold is not set")
    return path.replace("{fold}", str(fold))


def build_initial_model(init: InitConfig, fold: int | None = None) -> tuple[ClefModel, dict[str, Any]]:
    """The dual encoder a run starts from, and a record of where it came from.

    Raises:
        UserError: ``{fold}`` in the checkpoint path without a fold; a missing or foreign checkpoint.
    """
    from clef.checkpoint import load_checkpoint, read_metadata
    from clef.model import build_model

    if init.checkpoint:
        path = fill_fold(str(init.checkpoint), fold, "init.checkpoint")
        meta = read_metadata(path)
        model, _ = load_checkpoint(path)
        source = {
            "checkpoint": path,
            "backbone": meta["backbone"]["name"],
            "task": meta.get("task"),
            "training_config": meta.get("training_config"),
        }
        return model, source
    model = build_model(init.backbone, dict(init.backbone_config), pretrained=init.pretrained)
    return model, {"checkpoint": None, "backbone": init.backbone, "pretrained": init.pretrained}


def apply_trainable(model: ClefModel, trainable: TrainableConfig) -> None:
    """Lock what ``trainable`` says should not train (a ``null`` tower is left as it is)."""
    if trainable.image_blocks is not None:
        model.lock_image_tower(trainable.image_blocks)
    if trainable.text_blocks is not None:
        model.lock_text_tower(trainable.text_blocks)


def param_groups(
    model: ClefModel, optim: OptimConfig, head: torch.nn.Module | None = None
) -> dict[str, ParamGroup]:
    """Trainable parameters by learning rate: ``image``, ``text``, ``other`` and (stage 2) ``head``.

    Call after locking: locked parameters are left out, and so are empty groups.
    """
    groups = model.param_groups()
    out = {
        "image": ParamGroup(groups["image"], optim.lr_image),
        "text": ParamGroup(groups["text"], optim.lr_text),
        "other": ParamGroup(groups["other"], optim.lr_other),
    }
    if head is not None:
        out["head"] = ParamGroup([p for p in head.parameters() if p.requires_grad], optim.lr_head)
    return {k: g for k, g in out.items() if list(g.params)}
