"""The rows of the paper's ablation table (method.md §5) as data, and the config keys each row sets.

A row's stage-1 switches (PA, PI) name *which checkpoint* stage 2 starts from; its stage-2 switches
(I, N, D) map to ``method.head`` and ``method.description_loss`` of :class:`clef.stage2.MethodConfig`:

=====  =====  =====  ==========================================================
I      N      D      stage-2 config
=====  =====  =====  ==========================================================
✓                    ``head: linear``, ``description_loss: false``
✓      ✓             ``head: names``, ``description_loss: false``
✓      ✓      ✓      ``head: names``, ``description_loss: true`` (L_IN + L_DN)
✓             ✓      ``head: descriptions``, ``description_loss: false`` (D without N)
=====  =====  =====  ==========================================================

``configs/paper/`` holds one file per row and dataset, generated from :data:`ABLATION_ROWS` by
:func:`paper_config` (a test checks the files match).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "AblationRow",
    "ABLATION_ROWS",
    "PAPER_DATASETS",
    "stage2_switches",
    "paper_config",
    "paper_config_text",
    "write_paper_configs",
]


@dataclass(frozen=True)
class AblationRow:
    """One row of the paper's ablation table, with its reported numbers."""

    key: str  # file stem, e.g. "07_clef_pi_i"
    model: str  # "CLIP", "FaRL" or "CLEF"
    pa: bool
    pi: bool
    i: bool
    n: bool
    d: bool
    bp4d: float  # mean F1 over 12 AUs, 3-fold (paper)
    rafdb: float  # accuracy (paper)

    @property
    def switches(self) -> str:
        """The row's ticks, e.g. ``PA+PI / I+N+D``."""
        stage1 = "+".join(n for n, on in (("PA", self.pa), ("PI", self.pi)) if on) or "-"
        stage2 = "+".join(n for n, on in (("I", self.i), ("N", self.n), ("D", self.d)) if on)
        return f"{stage1} / {stage2}"


ABLATION_ROWS: tuple[AblationRow, ...] = (
    AblationRow("01_clip_i", "CLIP", False, False, True, False, False, 63.4, 87.88),
    AblationRow("02_clip_in", "CLIP", False, False, True, True, False, 64.0, 88.72),
    AblationRow("03_clip_ind", "CLIP", False, False, True, True, True, 64.4, 89.70),
    AblationRow("04_farl_i", "FaRL", False, False, True, False, False, 63.7, 88.31),
    AblationRow("05_farl_in", "FaRL", False, False, True, True, False, 64.1, 88.69),
    AblationRow("06_farl_ind", "FaRL", False, False, True, True, True, 64.6, 88.78),
    AblationRow("07_clef_pi_i", "CLEF", False, True, True, False, False, 65.0, 89.67),
    AblationRow("08_clef_pa_pi_i", "CLEF", True, True, True, False, False, 64.2, 89.34),
    AblationRow("09_clef_pi_in", "CLEF", False, True, True, True, False, 64.7, 88.57),
    AblationRow("10_clef_pa_pi_in", "CLEF", True, True, True, True, False, 64.9, 89.57),
    AblationRow("11_clef_pi_ind", "CLEF", False, True, True, True, True, 64.8, 89.44),
    AblationRow("12_clef_pa_pi_id", "CLEF", True, True, True, False, True, 65.7, 89.73),
    AblationRow("13_clef_pa_pi_ind", "CLEF", True, True, True, True, True, 65.9, 90.09),
)


def stage2_switches(row: AblationRow) -> dict[str, Any]:
    """The ``method`` keys of a row's stage-2 ticks (I, N, D)."""
    if row.n:
        return {"head": "names", "description_loss": row.d}
    if row.d:
        return {"head": "descriptions", "description_loss": False}
    return {"head": "linear", "description_loss": False}


# Where the paper-backbone weights are expected (users put them there, or override init.*):
# the OpenAI CLIP ViT-B/16 in Hugging Face format, and FaRL's OpenAI-layout state dict.
CLIP_WEIGHTS = "weights/clip-vit-base-patch16"
FARL_WEIGHTS = "weights/FaRL-Base-Patch16-LAIONFace20M-ep64.pth"

# Dataset -> (data keys, task). BP4D: 3-fold subject-exclusive (fold chosen with data.fold=k or by
# `clef crossval`); RAF-DB: the official split.
PAPER_DATASETS: dict[str, tuple[dict[str, Any], str]] = {
    "bp4d": ({"dataset": "bp4d", "root": "data/BP4D", "fold": 1, "batch_size": 64, "workers": 8}, "au"),
    "rafdb": (
        {"dataset": "rafdb", "root": "data/RAF-DB", "fold": None, "batch_size": 64, "workers": 8},
        "fer",
    ),
}


def _stage1_checkpoint(row: AblationRow, dataset: str) -> str:
    # Stage 1 runs on the lab data: per fold on the fold's training subjects for BP4D, on all of it
    # for FER (method.md §3, "ours, data"). These are the paths `clef pretrain` is expected to
    # write with the matching stage-1 config; override init.checkpoint to point elsewhere.
    variant = "pa_pi" if row.pa else "pi"
    if dataset == "bp4d":
        return f"runs/pretrain/bp4d_clip_{variant}/fold{{fold}}/stage1"
    return f"runs/pretrain/bp4d_clip_{variant}/all/stage1"


def paper_config(row: AblationRow, dataset: str) -> dict[str, Any]:
    """The override mapping (a :class:`clef.stage2.FinetuneConfig` YAML) of ``row`` on ``dataset``."""
    data, task = PAPER_DATASETS[dataset]
    if row.model == "CLEF":
        init: dict[str, Any] = {"checkpoint": _stage1_checkpoint(row, dataset)}
    else:
        weights = CLIP_WEIGHTS if row.model == "CLIP" else FARL_WEIGHTS
        init = {"backbone": "clip-vit-b16", "backbone_config": {"weights": weights}, "pretrained": True}
    return {
        "run_dir": f"runs/paper/{dataset}/{row.key}",
        "device": "cuda",
        "init": init,
        "data": dict(data),
        "method": {"task": task, "prompt_set": "labels", **stage2_switches(row)},
        # Fine-tuning a pretrained ViT-B/16: small rates on the towers, a smaller one on the text tower.
        "optim": {"lr_image": 1e-5, "lr_text": 1e-6, "lr_other": 1e-4, "lr_head": 1e-3},
        "engine": {
            "steps": 20000 if dataset == "bp4d" else 10000,
            "warmup_steps": 500,
            "checkpoint_every": 2000,
        },
    }


def paper_config_text(row: AblationRow, dataset: str) -> str:
    """The YAML file of ``row`` on ``dataset``, with a header naming the row and the paper's number."""
    import yaml

    number = row.bp4d if dataset == "bp4d" else row.rafdb
    metric = "mean F1 over 12 AUs, 3-fold" if dataset == "bp4d" else "accuracy"
    header = (
        f"# Paper ablation row: {row.model}  {row.switches}  (paper {dataset}: {number}, {metric}).\n"
        "# Generated by clef.ablation.write_paper_configs; run: clef finetune --config THIS_FILE\n"
    )
    if dataset == "bp4d":
        header += "# 3 folds: clef crossval --config THIS_FILE (or data.fold=1|2|3).\n"
    if row.model == "CLEF":
        header += "# Starts from the stage-1 checkpoint of its PA/PI setting (init.checkpoint).\n"
    return header + yaml.safe_dump(paper_config(row, dataset), sort_keys=False)


def write_paper_configs(out_dir) -> list:
    """Write ``out_dir/<dataset>/<row.key>.yaml`` for every row and dataset; return the paths."""
    from pathlib import Path

    paths = []
    for dataset in PAPER_DATASETS:
        folder = Path(out_dir) / dataset
        folder.mkdir(parents=True, exist_ok=True)
        for row in ABLATION_ROWS:
            path = folder / f"{row.key}.yaml"
            path.write_text(paper_config_text(row, dataset))
            paths.append(path)
    return paths
