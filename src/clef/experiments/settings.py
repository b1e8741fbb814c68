"""The sizes of an experiment on the built-in world, and the stage-1 / stage-2 runs they make.

:class:`ExperimentConfig` is shared by ``clef reproduce`` (:mod:`clef.experiments.reproduce`) and
``clef demo`` (:mod:`clef.experiments.demo`); each keeps its own presets. :func:`stage1_config` and
:func:`stage2_config` turn it into the configs of the stage programs (:mod:`clef.pretrain`,
:mod:`clef.finetune`), so an experiment runs exactly what ``clef pretrain`` / ``clef finetune`` would
run with those configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clef.engine import EngineConfig
from clef.synth.world import WorldConfig
from clef.zeroshot import DEFAULT_SEEN

__all__ = ["ExperimentConfig", "stage1_config", "stage2_config"]


@dataclass(frozen=True)
class ExperimentConfig:
    """Sizes of an experiment on the built-in world (world, backbone, steps, batch, seeds)."""

    mode: str = "quick"
    seeds: tuple[int, ...] = (0,)
    world: WorldConfig = WorldConfig(lab_subjects=41, frames_per_video=8, wild_images=1000)
    # Offline backbone overrides: the pretrained face ResNet at 112 px (the world is rendered at 64 px
    # and resized on load; 150 px native reads AUs better from frozen features but costs 2x) + the
    # pretrained MiniLM text tower. The from-scratch CNN is {"image_encoder": "cnn", ...}.
    backbone_config: dict[str, Any] = field(
        default_factory=lambda: {"image_encoder": "face-resnet", "image_size": 112}
    )
    # How much of the image tower trains (trainable.image_blocks): the face ResNet's last two stages
    # (conv256, conv256_out) + the new pooling norms and projection; null = all of it. The locked
    # stages cost a forward pass only (no autograd is recorded through them).
    image_trainable_blocks: int | None = 2
    # Peak learning rate of the image tower's body (optim.lr_image): small for a pretrained tower,
    # so fine-tuning adapts its features instead of overwriting them; the new projection, logit
    # scale and heads keep the library's rates.
    lr_image: float = 1e-4
    stage1_steps: int = 40
    stage1_frames_per_activity: int = 4  # x 8 activities per batch
    stage2_steps: int = 60  # quick mode: a short run (the full mode and the demo train longer)
    batch_size: int = 32
    # Only the last MiniLM block + the projection train (stage 1 with PA, stage 2 with text heads):
    # L_DN needs a trainable text side, and the whole tower is too slow on a 2-core CPU.
    text_trainable_blocks: int = 1
    au_fold: int = 1
    seen: tuple[str, ...] = DEFAULT_SEEN
    device: str = "cpu"
    workers: int = 0


def _engine(steps: int, progress: bool) -> EngineConfig:
    return EngineConfig(
        steps=steps, warmup_steps=max(1, steps // 10), checkpoint_every=10**9, log_every=10, progress=progress
    )


def stage1_config(cfg: ExperimentConfig, variant: str, seed: int, run_dir: Path, root: Path, progress: bool):
    """The :class:`clef.pretrain.PretrainConfig` of stage-1 ``variant`` (``pi`` or ``pa_pi``) on the
    lab world at ``root``, fold ``cfg.au_fold``'s training subjects."""
    from clef.pretrain import PretrainConfig, PretrainData
    from clef.run_config import InitConfig, OptimConfig, TrainableConfig
    from clef.stage1 import Stage1LossConfig

    return PretrainConfig(
        run_dir=str(run_dir),
        seed=seed,
        device=cfg.device,
        prompt_set="synth",
        init=InitConfig(backbone_config=dict(cfg.backbone_config)),
        trainable=TrainableConfig(
            image_blocks=cfg.image_trainable_blocks, text_blocks=cfg.text_trainable_blocks
        ),
        optim=OptimConfig(lr_image=cfg.lr_image),
        data=PretrainData(
            dataset="bp4d",
            root=str(root),
            fold=cfg.au_fold,
            frames_per_activity=cfg.stage1_frames_per_activity,
            frame_stride=2,
            workers=cfg.workers,
        ),
        loss=Stage1LossConfig(image_loss="supcon", image_text=variant == "pa_pi"),
        engine=_engine(cfg.stage1_steps, progress),
    )


def stage2_config(
    cfg: ExperimentConfig,
    task: str,
    root: Path,
    run_dir: Path,
    seed: int,
    checkpoint: Path | None,
    switches: dict[str, Any],
    progress: bool,
):
    """The :class:`clef.finetune.FinetuneConfig` of one ablation row (``switches``: its
    ``method.head`` / ``method.description_loss``) on one task: ``au`` on the lab world (fold
    ``cfg.au_fold``), ``fer`` on the wild world (its official-style split)."""
    from clef.finetune import DataConfig, FinetuneConfig
    from clef.run_config import InitConfig, OptimConfig, TrainableConfig
    from clef.stage2 import MethodConfig

    if checkpoint is not None:
        init = InitConfig(checkpoint=str(checkpoint))
    else:
        init = InitConfig(backbone="offline", backbone_config=dict(cfg.backbone_config), pretrained=True)
    data = DataConfig(
        dataset="bp4d" if task == "au" else "rafdb",
        root=str(root),
        fold=cfg.au_fold if task == "au" else None,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
    )
    uses_text = switches["head"] != "linear"
    method = MethodConfig(task=task, au_pos_weight="balanced" if task == "au" else "none", **switches)
    return FinetuneConfig(
        seed=seed,
        device=cfg.device,
        run_dir=str(run_dir),
        init=init,
        trainable=TrainableConfig(
            image_blocks=cfg.image_trainable_blocks,
            text_blocks=cfg.text_trainable_blocks if uses_text else 0,
        ),
        optim=OptimConfig(lr_image=cfg.lr_image),
        data=data,
        method=method,
        engine=_engine(cfg.stage2_steps, progress),
    )
