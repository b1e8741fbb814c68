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
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clef.errors import UserError
from clef.run_folder import atomic_write
from clef.textfiles import load_json

FORMAT = "clef-checkpoint"
FORMAT_VERSION = 1
_EXTRA_PREFIX = "extra."  # tensors that are not part of the model (e.g. a stage-2 head's biases)


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, sidecar) for ``path`` given as ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


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


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Sidecar keys: (what the value must be, a test of it, whether the key must be present). Every sidecar
# save_checkpoint writes has them all; the required ones are those the loaders cannot do without.
_SIDECAR_KEYS: dict[str, tuple[str, Any, bool]] = {
    "format_version": ("an integer", _integer, True),
    "backbone": ("a mapping with 'name' and 'config'", lambda v: isinstance(v, dict), True),
    "labels": ("a list of label names or null", lambda v: v is None or _strings(v), True),
    "task": ("a string or null", lambda v: v is None or isinstance(v, str), True),
    "extra_tensors": ("a list of tensor names", _strings, True),
    "preprocess": ("a mapping", lambda v: isinstance(v, dict), False),
    "embed_dim": ("an integer", _integer, False),
    "logit_scale": ("a number", lambda v: _integer(v) or isinstance(v, float), False),
    "prompt_set": ("a string or null", lambda v: v is None or isinstance(v, str), False),
    "metrics": ("a mapping or null", lambda v: v is None or isinstance(v, dict), False),
    "notes": ("a mapping or null", lambda v: v is None or isinstance(v, dict), False),
    "versions": ("a mapping", lambda v: isinstance(v, dict), False),
}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The sidecar of a checkpoint (JSON only; no weights are read).

    Raises:
        UserError: the sidecar is missing, not UTF-8, not JSON, not a clef sidecar, written by a newer
            clef, or lacks a key or has one of the wrong type (naming the key).
    """
    _, sidecar_path = checkpoint_paths(path)
    if not sidecar_path.exists():
        raise UserError(f"{sidecar_path}: no such checkpoint sidecar")
    meta = load_json(sidecar_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f'{sidecar_path}: not a clef checkpoint sidecar (no "format": "{FORMAT}")')
    missing = [k for k, (_, _, required) in _SIDECAR_KEYS.items() if required and k not in meta]
    if missing:
        raise UserError(f"{sidecar_path}: incomplete checkpoint sidecar: missing key(s) {', '.join(missing)}")
    for key, (expected, valid, _) in _SIDECAR_KEYS.items():
        if key in meta and not valid(meta[key]):
            raise UserError(f"key {key!r} is {_short(meta[key])}", file=sidecar_path, expected=expected)
    backbone = meta["backbone"]
    if not isinstance(backbone.get("name"), str) or not isinstance(backbone.get("config"), dict):
        raise UserError(
            f"key 'backbone' is {_short(backbone)}",
            file=sidecar_path,
            expected="a mapping with 'name' and 'config'",
        )
    if meta["format_version"] > FORMAT_VERSION:
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
    try:
        model = build_model(backbone["name"], backbone["config"], pretrained=False)
    except UserError as err:  # an unknown backbone or config key: say which file holds it
        raise UserError(err.reason, file=sidecar_path) from None
    except (TypeError, ValueError) as err:  # config values the architecture cannot be built from
        raise UserError(
            f"backbone {backbone['name']!r} cannot be built from the sidecar's config ({err})",
            file=sidecar_path,
        ) from None
    extra = {k[len(_EXTRA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_EXTRA_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(_EXTRA_PREFIX)}
    mismatch = _mismatch(model.state_dict(), state)
    if mismatch:
        raise UserError(
            f"{weights_path}: weights do not fit backbone {backbone['name']!r} as {sidecar_path.name} "
            f"describes it: {mismatch}"
        )
    model.load_state_dict(state, strict=True)
    if sorted(extra) != sorted(meta["extra_tensors"]):
        raise UserError(
            f"{sidecar_path}: lists extra tensors [{', '.join(sorted(meta['extra_tensors']))}] but "
            f"{weights_path.name} holds [{', '.join(sorted(extra))}]"
        )
    model.to(device)
    meta = dict(meta)
    meta["extra_tensors"] = {k: v.to(device) for k, v in extra.items()}
    return model, meta


def _mismatch(expected: Mapping[str, Tensor], found: Mapping[str, Tensor], shown: int = 3) -> str:
    """What keeps ``found`` from loading into a model whose state is ``expected`` ("" when nothing)."""

    def names(keys: list[str]) -> str:
        more = f", ... ({len(keys)} in all)" if len(keys) > shown else ""
        return ", ".join(keys[:shown]) + more

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if expected[k].shape != found[k].shape)
    parts = []
    if missing:
        parts.append(f"missing tensors {names(missing)}")
    if unexpected:
        parts.append(f"unexpected tensors {names(unexpected)}")
    if reshaped:
        shapes = [
            f"{k} {tuple(found[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
            for k in reshaped
        ]
        parts.append(f"other shapes: {names(shapes)}")
    return "; ".join(parts)
