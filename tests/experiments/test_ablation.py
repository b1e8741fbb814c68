"""The paper's ablation rows as data, the shipped paper configs, and the stage-1 -> stage-2 chain they
form (every CLEF row starts from a folder a shipped stage-1 config writes)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from clef.checkpoint import save_checkpoint
from clef.cli import main
from clef.config import load_config
from clef.experiments.ablation import (
    ABLATION_ROWS,
    PAPER_DATASETS,
    STAGE1_VARIANTS,
    paper_config,
    paper_config_text,
    paper_stage1_config_text,
    stage2_switches,
)
from clef.finetune import FinetuneConfig, build_finetune_model
from clef.label_space import label_space
from clef.labels import BP4D_AUS
from clef.model import build_model
from clef.pretrain import PretrainConfig
from clef.prompts import load_prompt_set
from clef.run_config import build_initial_model, fill_fold, param_groups
from clef.stage2 import Stage2Step
from tiny import TINY_CLIP, TINY_CLIP_YAML, stage2_batch

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "configs" / "paper"
STAGE1 = REPO / "configs" / "pretrain" / "paper"
PROMPTS = load_prompt_set("labels")
CLASSES = ("happiness", "sadness", "surprise")


def _stage1_files() -> dict[Path, tuple[str, bool]]:
    return {
        STAGE1 / f"bp4d_clip_{variant}{'' if per_fold else '_all'}.yaml": (variant, per_fold)
        for variant in STAGE1_VARIANTS
        for per_fold in (True, False)
    }


def test_paper_config_files_match_the_ablation_rows():
    files = sorted(PAPER.glob("*/*.yaml"))
    assert len(files) == len(ABLATION_ROWS) * len(PAPER_DATASETS) == 26
    for dataset in PAPER_DATASETS:
        for row in ABLATION_ROWS:
            path = PAPER / dataset / f"{row.key}.yaml"
            assert path.read_text() == paper_config_text(row, dataset), f"{path} is stale"
    assert sorted(STAGE1.glob("*.yaml")) == sorted(_stage1_files())
    for path, (variant, per_fold) in _stage1_files().items():
        assert path.read_text() == paper_stage1_config_text(variant, per_fold), f"{path} is stale"


def _stage1_outputs() -> set[str]:
    """Every ``run_dir/stage1`` the shipped stage-1 configs write, for each fold they run on."""
    out = set()
    for path in _stage1_files():
        cfg = load_config(PretrainConfig, path)
        folds = (1, 2, 3) if cfg.data.fold is not None else (None,)
        out |= {fill_fold(cfg.run_dir, fold, "run_dir") + "/stage1" for fold in folds}
    return out


def test_every_clef_row_reads_a_folder_a_shipped_stage1_config_writes():
    written = _stage1_outputs()
    assert len(written) == 2 * 3 + 2  # PI and PA+PI, per fold and on all subjects
    read = set()
    for dataset in PAPER_DATASETS:
        for row in ABLATION_ROWS:
            cfg = load_config(FinetuneConfig, PAPER / dataset / f"{row.key}.yaml")
            if row.model != "CLEF":
                continue
            folds = (1, 2, 3) if cfg.data.fold is not None else (None,)
            for fold in folds:
                path = fill_fold(cfg.init.checkpoint, fold, "init.checkpoint")
                assert path in written, f"{row.key} on {dataset} (fold {fold}) reads {path}"
                read.add(path)
            assert ("pa_pi" in cfg.init.checkpoint) == row.pa
    assert read == written  # and no shipped stage-1 run is left unused


def test_the_shipped_chain_runs_on_a_tiny_tree(tiny_world, tmp_path, monkeypatch):
    """Stage 1 from a shipped config, then a shipped CLEF row from the folder it wrote (relative
    paths, as the configs have them), with the paper's backbone at toy size."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_world / "bp4d", tmp_path / "data" / "BP4D")
    tiny = [
        f"init.backbone_config={TINY_CLIP_YAML}",
        "init.pretrained=false",
        "device=cpu",
        "prompt_set=synth",  # the world's activities are T1-T8 with the synthetic texts
        "data.frames_per_activity=2",
        "data.workers=0",
        "engine.steps=1",
        "engine.warmup_steps=1",
        "engine.progress=false",
    ]
    assert main(["pretrain", "--config", str(STAGE1 / "bp4d_clip_pa_pi.yaml"), *tiny]) == 0
    assert (tmp_path / "runs/pretrain/bp4d_clip_pa_pi/fold1/stage1.safetensors").is_file()
    row = PAPER / "bp4d" / "13_clef_pa_pi_ind.yaml"
    stage2 = ["device=cpu", "data.batch_size=8", "data.workers=0", "engine.steps=1", "engine.warmup_steps=1"]
    assert main(["finetune", "--config", str(row), *stage2, "--quiet"]) == 0
    sidecar = yaml.safe_load((tmp_path / "runs/paper/bp4d/13_clef_pa_pi_ind/model.json").read_text())
    assert sidecar["notes"]["init"]["checkpoint"] == "runs/pretrain/bp4d_clip_pa_pi/fold1/stage1"


@pytest.fixture(scope="module")
def tiny_stage1(tmp_path_factory):
    """A stage-1-like checkpoint of the real CLIP architecture at toy size (random weights)."""
    path = tmp_path_factory.mktemp("stage1") / "stage1"
    save_checkpoint(path, build_model("clip-vit-b16", TINY_CLIP, pretrained=False), task="pretrain")
    return path


@pytest.mark.parametrize("dataset", list(PAPER_DATASETS))
@pytest.mark.parametrize("row", ABLATION_ROWS, ids=lambda r: r.key)
def test_every_paper_config_parses_and_builds(row, dataset, tiny_stage1):
    cfg = load_config(FinetuneConfig, PAPER / dataset / f"{row.key}.yaml")
    switches = stage2_switches(row)
    assert cfg.method.head == switches["head"]
    assert cfg.method.description_loss == switches["description_loss"]
    assert (cfg.init.checkpoint is not None) == (row.model == "CLEF")
    if row.model == "CLEF":
        assert (cfg.data.fold is not None) == ("{fold}" in cfg.init.checkpoint)
        # Same structure, a toy checkpoint in place of the real stage-1 run.
        init = dataclasses.replace(cfg.init, checkpoint=str(tiny_stage1))
    else:
        assert cfg.init.backbone_config["weights"].endswith(".pth") == (row.model == "FaRL")
        init = dataclasses.replace(cfg.init, backbone_config=TINY_CLIP, pretrained=False)
    clef, source = build_initial_model(init, cfg.data.fold)
    task = cfg.method.task
    space = label_space(
        task, PROMPTS, aus=BP4D_AUS if task == "au" else (), classes=CLASSES if task == "fer" else ()
    )
    model = build_finetune_model(clef, space, cfg.method, cfg.prompt_set, cfg.trainable)
    out = Stage2Step(cfg.method, None, torch.Generator())(model, stage2_batch(2, 32, len(space), len(space)))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and source["backbone"] == "clip-vit-b16"
    groups = set(param_groups(model.clef, cfg.optim, model.head))
    assert "image" in groups and ("text" in groups) == (row.n or row.d)
    assert ("head" in groups) == (task == "au" or cfg.method.head == "linear")  # FER text head: no weights


def test_paper_config_maps_switches():
    row = next(r for r in ABLATION_ROWS if r.key == "12_clef_pa_pi_id")
    assert paper_config(row, "rafdb")["method"]["head"] == "descriptions"
    assert stage2_switches(ABLATION_ROWS[0]) == {"head": "linear", "description_loss": False}
