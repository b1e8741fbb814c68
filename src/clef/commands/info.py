"""``clef info CKPT``: print a checkpoint's sidecar readably (reads JSON only, never the weights)."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="describe a checkpoint (backbone, labels, metrics, versions)")
    parser.add_argument("checkpoint", help="NAME, NAME.safetensors or NAME.json of a clef checkpoint")
    parser.add_argument("--json", action="store_true", help="print the sidecar as JSON")
    parser.set_defaults(func=run)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value):
        return ", ".join(_fmt(v) for v in value)
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _section(title: str, mapping: dict[str, Any] | None) -> list[str]:
    if not mapping:
        return []
    width = max(len(str(k)) for k in mapping)
    return [f"{title}:"] + [f"  {str(k):<{width}}  {_fmt(v)}" for k, v in mapping.items()]


def run(args: argparse.Namespace) -> int:
    from clef.checkpoint import checkpoint_paths, read_metadata

    meta = read_metadata(args.checkpoint)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    weights, sidecar = checkpoint_paths(args.checkpoint)
    size = f"{weights.stat().st_size / 2**20:.1f} MiB" if weights.is_file() else "MISSING"
    lines = [
        f"checkpoint  {sidecar}",
        f"weights     {weights} ({size})",
        f"created     {meta.get('created')}",
        f"backbone    {meta['backbone']['name']}",
        f"task        {meta.get('task')}",
        f"prompt set  {meta.get('prompt_set')}",
        f"embed dim   {meta.get('embed_dim')}",
        f"scale       {_fmt(min(math.exp(meta['logit_scale']), 100.0)) if 'logit_scale' in meta else None}",
    ]
    if meta.get("labels"):
        lines.append(f"labels      {_fmt(meta['labels'])}")
    if meta.get("thresholds") is not None:
        lines.append(f"thresholds  {_fmt(meta['thresholds'])}")
    if meta.get("extra_tensors"):
        lines.append(f"extra       {_fmt(meta['extra_tensors'])}")
    lines += _section("preprocess", meta.get("preprocess"))
    lines += _section("backbone config", meta["backbone"].get("config"))
    lines += _section("metrics", meta.get("metrics"))
    training = meta.get("training_config")
    lines += _section("training config", training if isinstance(training, dict) else None)
    lines += _section("notes", meta.get("notes"))
    lines += _section("versions", meta.get("versions"))
    print("\n".join(lines))
    return 0
