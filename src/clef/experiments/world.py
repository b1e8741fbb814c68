"""The built-in world an experiment runs on: rendered once per config, and what label-blind predictors
score on it (the line every learned row must clear)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clef.synth.world import WorldConfig

__all__ = ["ensure_world", "trivial_baselines", "world_baselines"]


def ensure_world(world_cfg: WorldConfig, folder: Path, log: Callable[[str], None], progress: bool) -> Path:
    """Render the lab and wild domains of ``world_cfg`` into ``folder`` unless it already holds them.

    A folder rendered earlier is reused only when its ``world.json`` records the same config, so a
    run never trains on a world of another size or seed.
    """
    from clef.synth.export import DOMAIN_FOLDERS, write_world

    manifest = folder / "world.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text()).get("config")
        if recorded == json.loads(json.dumps(dataclasses.asdict(world_cfg))):
            return folder
        log(f"{folder} holds a world of another config: rendering it again")
        for domain in ("lab", "wild"):  # stale frames and label files of the old world must go
            shutil.rmtree(folder / DOMAIN_FOLDERS[domain], ignore_errors=True)
    log(f"rendering the built-in world into {folder}")
    write_world(world_cfg, folder, domains=("lab", "wild"), workers=2, progress=progress)
    return folder


def trivial_baselines(au_fold: int, lab, wild) -> dict[str, Any]:
    """What label-blind predictors score on the test sets every row is scored on.

    ``lab`` / ``wild``: the world's BP4D- and RAF-DB-layout record tables, split as the rows split them.
    ``au_all_positive_f1``: mean F1 over the BP4D AUs of predicting every AU present on fold
    ``au_fold``'s test frames (masked labels excluded), i.e. mean of 2p / (1 + p) over base rates p;
    ``fer_majority_accuracy`` / ``fer_majority_class``: always answering the training split's most
    frequent class on the wild test split.
    """
    from clef.data.records import au_targets
    from clef.finetune import DataConfig, split_records
    from clef.labels import BP4D_AUS

    _, lab_test = split_records(lab, DataConfig(dataset="bp4d", fold=au_fold))
    targets, mask = au_targets(lab_test, BP4D_AUS)
    base_rate = (targets * mask).sum(axis=0) / np.maximum(mask.sum(axis=0), 1)
    train, test = split_records(wild, DataConfig(dataset="rafdb", fold=None))
    majority = str(train["expression"].value_counts().idxmax())
    return {
        "au_all_positive_f1": float(np.mean(2 * base_rate / (1 + base_rate))),
        "fer_majority_accuracy": float((test["expression"] == majority).mean()),
        "fer_majority_class": majority,
    }


def world_baselines(au_fold: int, world: Path) -> dict[str, Any]:
    """:func:`trivial_baselines` of the world rendered into ``world``."""
    from clef.data import load_dataset

    lab, wild = load_dataset("bp4d", world / "bp4d"), load_dataset("rafdb", world / "rafdb")
    return trivial_baselines(au_fold, lab, wild)
