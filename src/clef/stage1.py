"""The stage-1 training step: L_pre = L_II′ + L_IA on a batch of frames (docs/method.md §3).

This is the step function :func:`clef.engine.train` calls; it assembles the parts (augmentation,
model contract, losses) and owns no loop. The model contract used here is the project's:
``encode_image(x (B, 3, S, S)) -> (B, D)``, ``encode_text(tokens) -> (K, D)`` and ``scale()``, the
cosine multiplier exp(logit_scale) clamped at 100 (docs/method.md §2; :class:`clef.model.ClefModel`).

Ablation switches (docs/method.md §5): ``image_loss="supcon"`` is PI, ``image_text=True`` is PA;
``image_loss="simclr"`` is the instance-level baseline the paper argues against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from clef.augment import BatchAugment, to_float, two_views
from clef.losses import image_text_loss, nt_xent_loss, supcon_loss

__all__ = ["Stage1LossConfig", "Stage1Step", "SpreadMonitor"]


@dataclass(frozen=True)
class Stage1LossConfig:
    """Which stage-1 losses run, and how they are weighted."""

    image_loss: Literal["supcon", "simclr", "none"] = "supcon"  # L_II′ (PI), the SimCLR baseline, or off
    image_text: bool = True  # L_IA (PA)
    temperature: float = 0.1  # τ of the image–image loss (fixed, as in SupCon and SimCLR)
    image_weight: float = 1.0
    text_weight: float = 1.0  # the paper weighs the two terms equally
    gather_distributed: bool = True  # contrast against the global batch of all ranks

    def __post_init__(self) -> None:
        if self.image_loss == "none" and not self.image_text:
            raise ValueError("stage 1 needs at least one loss: image_loss='none' and image_text=false")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


class Stage1Step:
    """``(model, batch) -> {"loss", "loss_ii", "loss_ia", "logit_scale"}`` for :func:`clef.engine.train`.

    Args:
        cfg: :class:`Stage1LossConfig`.
        augment: the batched augmentation producing the two views I and I′.
        generator: CPU generator the augmentation draws from (give it to the engine to checkpoint).
        activity_texts: the K activity texts; text k describes activity index k. Needed when
            ``cfg.image_text``.
        preprocess: maps augmented float images in [0, 1] to the model's input (its mean/std
            normalisation); identity when None.

    The batch must hold ``image`` (B, 3, H, W) uint8 and ``activity`` (B,) int64 on the device.
    Both views go through the image tower in one call (2B images), and L_IA uses both views. The
    activity embeddings come from :meth:`clef.model.ClefModel.embed_texts`: computed once while the
    text tower is frozen, re-run with gradients at every step while any part of it trains.
    """

    def __init__(
        self,
        cfg: Stage1LossConfig,
        augment: BatchAugment,
        generator: torch.Generator,
        activity_texts: Sequence[str] | None = None,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if cfg.image_text and not activity_texts:
            raise ValueError("image_text=true needs the activity texts (activity_texts)")
        self.cfg = cfg
        self.augment = augment
        self.generator = generator
        self.activity_texts = list(activity_texts or ())
        self.preprocess = preprocess or (lambda x: x)

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        labels = batch["activity"]
        if bool((labels < 0).any()):
            raise ValueError("stage 1 needs an activity for every frame; the batch holds frames without one")
        v1, v2 = two_views(batch["image"], self.augment, self.generator)
        b = v1.shape[0]
        z = model.encode_image(self.preprocess(torch.cat([v1, v2], dim=0)))  # (2B, D)
        z1, z2 = z[:b], z[b:]
        zero = z.new_zeros(())
        loss_ii, loss_ia = zero, zero
        if cfg.image_loss == "supcon":
            loss_ii = supcon_loss(z1, z2, labels, 1.0 / cfg.temperature, cfg.gather_distributed)
        elif cfg.image_loss == "simclr":
            loss_ii = nt_xent_loss(z1, z2, cfg.temperature, cfg.gather_distributed)
        scale = model.scale()
        if cfg.image_text:
            text = model.embed_texts(self.activity_texts)  # (K, D)
            loss_ia = image_text_loss(z, text, torch.cat([labels, labels]), scale, cfg.gather_distributed)
        loss = cfg.image_weight * loss_ii + cfg.text_weight * loss_ia
        return {
            "loss": loss,
            "loss_ii": loss_ii.detach(),
            "loss_ia": loss_ia.detach(),
            "logit_scale": scale.detach(),
        }


class SpreadMonitor:
    """``(model) -> {"spread/mean_cosine", "spread/effective_rank"}``: how spread out the embeddings
    of a fixed batch of frames are (:func:`clef.probe.embedding_spread`), for the engine's ``monitor``.

    Stage 1 can *collapse*: every image mapped to nearly one point, the loss stuck at its
    constant-embedding value. Logged at every logged step, these two numbers show it (mean cosine
    near 1, effective rank near 1) or show the embeddings staying spread. The batch is fixed (the
    same frames, unaugmented) so the numbers are comparable across steps; the model runs in eval
    mode without gradients and gets its mode back, and no random stream is drawn from.

    Args:
        images: uint8 (N, 3, S, S) frames, N >= 2, at the model's input size.
        preprocess: the model's normalisation (float images in [0, 1] -> its input).
    """

    def __init__(self, images: torch.Tensor, preprocess: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(f"need (N >= 2, 3, S, S) images, got {tuple(images.shape)}")
        self.images = images
        self.preprocess = preprocess

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        from clef.probe import embedding_spread

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                device = next(model.parameters()).device
                z = model.encode_image(self.preprocess(to_float(self.images.to(device))))
        finally:
            model.train(was_training)
        return {f"spread/{k}": v for k, v in embedding_spread(z.float().cpu().numpy()).items()}
