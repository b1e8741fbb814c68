"""Checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (everything needed to rebuild and use them).

The JSON sidecar holds the backbone name and its config (which rebuilds the architecture without
reading any pretrained weights), the preprocessing, the prompt set, label names in output order,
decision thresholds, the training config, metrics and package versions. Loading reads safetensors
and JSON only: nothing is unpickled. Both files are written atomically (temporary file in the same
folder, then ``os.replace``), the weights first, so a sidecar never describes half-written weights.

A stage-2 run starts from a stage-1 checkpoint with ``load_checkpoint(path)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clef.errors import UserError

FORMAT = "clef-checkpoint"
FORMAT_VERSION = 1
_EXTRA_PREFIX = "extra."  # tensors that are not part of the model (e.g. a stage-2 head's biases)


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, sidecar) for ``path`` given as ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def atomic_write(target: Path, write) -> None:
    """Write ``target`` through ``write(temporary_path)``, then fsync and ``os.replace``: a reader sees
    the old file or the new one, never half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def finished_with(path: str | Path, training_config: Any) -> dict[str, Any] | None:
    """The sidecar of checkpoint ``path`` when both its files exist and it records exactly
    ``training_config`` (compared after the JSON round trip the sidecar went through), else None.

    Lets a re-run skip a run that already finished with the same config.
    """
    weights, sidecar = checkpoint_paths(path)
    if not (weights.is_file() and sidecar.is_file()):
        return None
    try:
        meta = read_metadata(path)
    except UserError:
        return None
    recorded = json.loads(json.dumps(_jsonable(training_config)))
    return meta if meta.get("training_config") == recorded else None


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Tensor):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what a checkpoint computes."""
    import numpy
    import safetensors
    import transformers

    from clef import __version__

    return {
        "clef": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }


def save_checkpoint(
    path: str | Path,
    model,
    *,
    prompt_set: str | None = None,
    labels: Sequence[str] | None = None,
    task: str | None = None,
    thresholds: Sequence[float] | Mapping[str, float] | None = None,
    training_config: Any = None,
    metrics: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, Tensor] | None = None,
    notes: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``model`` (a :class:`clef.model.ClefModel`) and its sidecar; return both paths.

    Args:
        path: ``NAME``, ``NAME.safetensors`` or ``NAME.json``.
        prompt_set: name or path of the prompt set the model was trained with.
        labels: label names in the order of the model's outputs (e.g. ``["AU1", "AU2", ...]``).
        task: e.g. ``"au"``, ``"fer"``, ``"pretrain"``.
        thresholds: decision thresholds (per label or one mapping).
        training_config: a dataclass or mapping (saved as JSON).
        metrics: JSON-ready numbers.
        extra_tensors: tensors that belong with the model but not in it (e.g. per-AU biases).
        notes: any other JSON-ready facts.
    """
    from safetensors.torch import save_file

    from clef.model.backbones import config_to_dict

    weights_path, sidecar_path = checkpoint_paths(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    for name, value in (extra_tensors or {}).items():
        tensors[_EXTRA_PREFIX + name] = value.detach().to("cpu").contiguous().clone()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "weights": weights_path.name,
        "backbone": {"name": model.backbone, "config": config_to_dict(model.backbone_config)},
        "preprocess": _jsonable(model.preprocess),
        "embed_dim": model.embed_dim,
        "logit_scale": float(model.logit_scale.detach()),
        "task": task,
        "prompt_set": None if prompt_set is None else str(prompt_set),
        "labels": None if labels is None else list(labels),
        "thresholds": _jsonable(thresholds),
        "training_config": _jsonable(training_config),
        "metrics": _jsonable(metrics),
        "extra_tensors": sorted(extra_tensors or {}),
        "notes": _jsonable(notes),
        "versions": package_versions(),
    }
    text = json.dumps(meta, indent=2, sort_keys=False, allow_nan=True) + "\n"
    atomic_write(weights_path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(sidecar_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return weights_path, sidecar_path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The sidecar of a checkpoint (JSON only; no weights are read)."""
    _, sidecar_path = checkpoint_paths(path)
    try:
        meta = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{sidecar_path}: no such checkpoint sidecar") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{sidecar_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{sidecar_path}: not a clef checkpoint sidecar")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{sidecar_path}: written by a newer clef (format {meta['format_version']})")
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model of a checkpoint -> ``(model, meta)``.

    The architecture is rebuilt from the sidecar's backbone config without reading pretrained
    weights, then the saved weights are loaded with strict key matching. ``meta`` is the sidecar
    dict plus ``meta["extra_tensors"]`` as a ``{name: Tensor}`` dict.

    Raises:
        UserError: missing files, a sidecar of another format, or weights that do not fit.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from clef.model.backbones import build_model

    weights_path, sidecar_path = checkpoint_paths(path)
    meta = read_metadata(path)
    if not weights_path.is_file():
        raise UserError(f"{weights_path}: weights of checkpoint {sidecar_path} are missing")
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise UserError(f"{weights_path}: cannot read safetensors weights ({err})") from None
    backbone = meta["backbone"]
    model = build_model(backbone["name"], backbone["config"], pretrained=False)
    extra = {k[len(_EXTRA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_EXTRA_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(_EXTRA_PREFIX)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape mismatch
        raise UserError(f"{weights_path}: weights do not fit backbone {backbone['name']!r}: {err}") from None
    if missing or unexpected:
        raise UserError(
            f"{weights_path}: weights do not fit backbone {backbone['name']!r}: "
            f"missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}"
        )
    model.to(device)
    meta = dict(meta)
    meta["extra_tensors"] = {k: v.to(device) for k, v in extra.items()}
    return model, meta
