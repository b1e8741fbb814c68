"""Stage 2: text-driven fine-tuning for AU detection and FER (method.md §4), and prediction.

The parts, each usable on its own:

* :class:`FinetuneConfig` (frozen, nested): what a fine-tuning run does. The ablation's stage-2
  switches are ``method.head`` (``linear`` = I, ``names`` = N, ``descriptions`` = D without N) and
  ``method.description_loss`` (L_DN, the D of "N + D"); stage 1 (PA, PI) is *which checkpoint*
  ``init.checkpoint`` names (docs/stage2.md has the table, :mod:`clef.ablation` the rows).
* :class:`LabelSpace`: the labels a model outputs, in order, with their name and description texts.
* :class:`FineTuneModel`: a :class:`clef.model.ClefModel` + a head (:mod:`clef.heads`) + the texts and
  templates that define its outputs. Its ``state_dict`` is what the engine checkpoints.
* :class:`Stage2Step`: the step function :func:`clef.engine.train` calls (L_fine = L_IN + w · L_DN).
* :func:`stage2_param_groups`: image tower, text tower (smaller learning rate), projections + scale,
  head.
* :func:`embed_images`, :func:`predict`, :func:`predict_texts`, :func:`evaluate_predictions`:
  batched, gradient-free scoring of a record table and its metrics.
* :func:`save_finetuned` / :func:`load_finetuned`: safetensors + JSON sidecar carrying labels in
  output order, texts, templates, thresholds (0.5), config and metrics.
* :func:`finetune`: the assembly (records -> split -> model -> engine -> checkpoint -> test metrics)
  that ``clef finetune`` and :mod:`clef.crossval` call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from clef.augment import AugmentConfig, BatchAugment, to_float
from clef.checkpoint import finished_with, load_checkpoint, read_metadata, save_checkpoint
from clef.data.dataset import ImageRecords
from clef.data.folds import split_fold
from clef.data.records import au_targets, record_aus
from clef.data.sampler import RandomBatchSampler
from clef.engine import EngineConfig, ParamGroup, seed_everything, train
from clef.errors import UserError
from clef.evaluation import AUResult, FERResult, evaluate_au, evaluate_fer
from clef.heads import LinearHead, PromptPairAUHead, TextAUHead, TextFERHead
from clef.labels import BP4D_AUS, DISFA_AUS, EXPRESSIONS, au_column
from clef.losses import description_name_loss, masked_bce_loss
from clef.model import ClefModel, build_model, build_text_classifier
from clef.prompts import load_prompt_set

__all__ = [
    "InitConfig",
    "DataConfig",
    "MethodConfig",
    "OptimConfig",
    "FinetuneConfig",
    "LIGHT_AUGMENT",
    "BENCHMARK_AUS",
    "LabelSpace",
    "label_space",
    "FineTuneModel",
    "Stage2Step",
    "au_pos_weights",
    "finished_run",
    "stage2_param_groups",
    "build_backbone",
    "build_finetune_model",
    "split_records",
    "resolve_labels",
    "embed_images",
    "Predictions",
    "predict",
    "predict_texts",
    "evaluate_predictions",
    "save_finetuned",
    "load_finetuned",
    "FinetuneResult",
    "finetune",
]

# The benchmark AUs of the datasets that define them (datasets.md); other datasets use every AU column.
BENCHMARK_AUS: dict[str, tuple[int, ...]] = {"bp4d": BP4D_AUS, "bp4dplus": BP4D_AUS, "disfa": DISFA_AUS}

# Stage 2 sees aligned faces and labels that depend on small facial details: crops stay large, no
# grayscale or blur (a blurred 64 px face loses AU cues), mild colour jitter. ``size`` is replaced by
# the model's input size when the run is built.
LIGHT_AUGMENT = AugmentConfig(
    crop_scale=(0.8, 1.0),
    crop_ratio=(0.9, 1.1),
    flip_p=0.5,
    jitter_p=0.5,
    brightness=0.2,
    contrast=0.2,
    saturation=0.2,
    hue=0.02,
    grayscale_p=0.0,
    blur_p=0.0,
)


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class InitConfig:
    """Where the weights come from.

    ``checkpoint`` set: a stage-1 (or any clef) checkpoint, ``NAME`` / ``NAME.safetensors`` /
    ``NAME.json``; ``{fold}`` in it is replaced by ``data.fold`` (one stage-1 run per fold). The
    backbone fields are then ignored: the checkpoint's sidecar rebuilds its own architecture.
    ``checkpoint`` empty: build ``backbone`` with ``backbone_config`` overrides; ``pretrained`` loads
    the backbone's own weights where it has any (MiniLM for ``offline``, ``weights`` for CLIP/FaRL);
    ``pretrained: false`` is everything from scratch.
    """

    checkpoint: str | None = None
    backbone: str = "offline"
    backbone_config: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = True


@dataclass(frozen=True)
class DataConfig:
    """Which records train and test.

    ``fold`` set: the dataset's subject-exclusive protocol (trains on the other parts' subjects);
    ``fold`` null: the ``split`` column (``train_split`` / ``test_split``, e.g. RAF-DB's official one).
    ``aus`` empty: the dataset's benchmark AUs (BP4D 12, DISFA 8), else every AU column present.
    ``classes`` empty: the dataset's own class order (``records.attrs["classes"]``), else the canonical
    expressions present. ``train_limit``: keep a seeded random subset of that many training records.
    """

    dataset: str = "bp4d"
    root: str = "clef-world/bp4d"
    fold: int | None = 1
    train_split: str = "train"
    test_split: str = "test"
    aus: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()
    train_limit: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    workers: int = 0


@dataclass(frozen=True)
class MethodConfig:
    """The stage-2 method (method.md §4). See docs/stage2.md for the ablation mapping."""

    task: Literal["au", "fer"] = "au"
    # linear = I (image encoder + linear head, no text); names = N (label-name prototypes);
    # descriptions = "D without N" (description prototypes).
    head: Literal["linear", "names", "descriptions"] = "names"
    description_loss: bool = True  # L_DN between description and name embeddings (needs head=names)
    description_weight: float = 1.0
    au_prompt: Literal["single", "pair"] = "single"  # one prompt per AU, or the with/without pair
    negative_templates: tuple[str, ...] = ("a photo of a person without {}.", "a photo of a face without {}.")
    au_pos_weight: Literal["none", "balanced"] = "none"  # balanced: #neg/#pos per AU, capped
    au_pos_weight_max: float = 10.0
    prompt_set: str = "labels"
    text_tower: Literal["train", "lock"] = "train"  # lock: frozen, text embeddings cached
    # With text_tower=train: null trains the whole text tower; k trains only its last k blocks and
    # its head (the token embeddings and earlier blocks stay fixed: much cheaper on a CPU).
    text_trainable_blocks: int | None = None
    augment: bool = True

    def __post_init__(self) -> None:
        for template in self.negative_templates:
            if template.count("{}") != 1:
                raise UserError(f"negative template {template!r} must contain '{{}}' exactly once")
        if self.text_trainable_blocks is not None and self.text_trainable_blocks < 0:
            raise UserError("method.text_trainable_blocks must be >= 0 or null")
        if self.description_weight < 0 or self.au_pos_weight_max < 1:
            raise UserError("method.description_weight must be >= 0 and au_pos_weight_max >= 1")

    def validate(self) -> None:
        """Cross-field checks, run when a model is built (not per override: ``head=linear`` followed
        by ``description_loss=false`` on a command line passes through an inconsistent state).

        Raises:
            UserError: naming the keys that conflict.
        """
        if self.description_loss and self.head != "names":
            raise UserError(
                f"method.description_loss=true needs method.head=names (L_DN ties descriptions to "
                f"names); head={self.head!r} has no name prototypes. Set method.description_loss=false."
            )
        if self.au_prompt == "pair" and (self.task != "au" or self.head != "names"):
            raise UserError("method.au_prompt=pair needs method.task=au and method.head=names")
        if self.au_prompt == "pair" and not self.negative_templates:
            raise UserError("method.au_prompt=pair needs method.negative_templates")


@dataclass(frozen=True)
class OptimConfig:
    """Peak learning rates per parameter group (the engine's schedule scales them per step).

    The text tower gets a smaller one than the rest (method.md §4); ``other`` holds both projections
    into the shared space and the logit scale; ``head`` the per-AU biases or the linear head.
    """

    lr_image: float = 1e-3
    lr_text: float = 1e-5
    lr_other: float = 1e-3
    lr_head: float = 1e-2


@dataclass(frozen=True)
class FinetuneConfig:
    """A whole fine-tuning run; YAML files hold only the keys that differ from these defaults."""

    seed: int = 0
    device: str = "cpu"
    run_dir: str = "runs/finetune"
    evaluate: bool = True  # score the test selection at the end (threshold 0.5, never tuned)
    init: InitConfig = InitConfig()
    data: DataConfig = DataConfig()
    method: MethodConfig = MethodConfig()
    optim: OptimConfig = OptimConfig()
    engine: EngineConfig = EngineConfig(steps=300, warmup_steps=30, checkpoint_every=100, log_every=10)
    augment: AugmentConfig = LIGHT_AUGMENT


# ------------------------------------------------------------------------------------- label space
@dataclass(frozen=True)
class LabelSpace:
    """The outputs of a model, in order: ``labels`` (``AU12`` or expression names) and their texts."""

    task: Literal["au", "fer"]
    labels: tuple[str, ...]
    names: tuple[str, ...]
    descriptions: tuple[str, ...]

    @property
    def aus(self) -> tuple[int, ...]:
        """AU numbers of an AU label space (``AU12`` -> 12)."""
        if self.task != "au":
            raise ValueError("an FER label space has no AUs")
        return tuple(int(label[2:]) for label in self.labels)

    def __len__(self) -> int:
        return len(self.labels)


def label_space(task: str, prompt_set, aus: Sequence[int] = (), classes: Sequence[str] = ()) -> LabelSpace:
    """The label space of ``task`` over ``aus`` (task "au") or ``classes`` (task "fer").

    ``prompt_set`` is a :class:`clef.prompts.PromptSet` or a name/path for
    :func:`clef.prompts.load_prompt_set`. Raises UserError when a label has no name or description.
    """
    if isinstance(prompt_set, (str, Path)):
        prompt_set = load_prompt_set(str(prompt_set))
    if task == "au":
        if not aus:
            raise UserError("an AU label space needs at least one AU")
        return LabelSpace(
            "au",
            tuple(au_column(a) for a in aus),
            tuple(prompt_set.au_name_texts(aus)),
            tuple(prompt_set.au_description_texts(aus)),
        )
    if task == "fer":
        if not classes:
            raise UserError("an FER label space needs at least one class")
        return LabelSpace(
            "fer",
            tuple(classes),
            tuple(prompt_set.expression_name_texts(classes)),
            tuple(prompt_set.expression_description_texts(classes)),
        )
    raise UserError(f"unknown task {task!r}; valid: au, fer")


# ------------------------------------------------------------------------------------------- model
class FineTuneModel(nn.Module):
    """A CLEF dual encoder with a stage-2 head and the texts that define its outputs.

    Args:
        clef: the dual encoder.
        space: the labels (order = output order) and their texts.
        head: ``linear`` (I), ``names`` (N) or ``descriptions`` (D without N).
        name_templates / description_templates: prompt templates (each with one ``{}``).
        au_prompt: ``single`` (logit = scale·cos + b_j) or ``pair`` (with / without, 2-way softmax).
        negative_templates: the "without" templates of ``au_prompt=pair``.

    Shapes: :meth:`prototypes` -> (C, D), or (2, C, D) for the prompt pair (index 0 "without");
    :meth:`logits` (B, D) unit-norm image embeddings -> (B, C).
    """

    def __init__(
        self,
        clef: ClefModel,
        space: LabelSpace,
        head: str = "names",
        name_templates: Sequence[str] = ("{}",),
        description_templates: Sequence[str] = ("{}",),
        au_prompt: str = "single",
        negative_templates: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.clef = clef
        self.space = space
        self.head_kind = head
        self.au_prompt = au_prompt
        self.name_templates = tuple(name_templates)
        self.description_templates = tuple(description_templates)
        self.negative_templates = tuple(negative_templates)
        n = len(space)
        if head == "linear":
            self.head: nn.Module = LinearHead(clef.embed_dim, n)
        elif head in ("names", "descriptions"):
            if space.task == "fer":
                self.head = TextFERHead()
            elif au_prompt == "pair":
                self.head = PromptPairAUHead()
            else:
                self.head = TextAUHead(n)
        else:
            raise UserError(f"unknown head {head!r}; valid: linear, names, descriptions")
        self._text_tables: dict[str, torch.Tensor] = {}  # frozen text tower only

    @property
    def uses_text(self) -> bool:
        return self.head_kind != "linear"

    def name_embeddings(self) -> torch.Tensor:
        """(C, D) label names through every name template, averaged (gradients reach a trainable tower)."""
        return build_text_classifier(self.clef, self.space.names, self.name_templates)

    def negative_embeddings(self) -> torch.Tensor:
        """(C, D) "without {AU}" prompts of the prompt-pair head."""
        return build_text_classifier(self.clef, self.space.names, self.negative_templates)

    def description_embeddings(self) -> torch.Tensor:
        """(C, D) descriptions through every description template, averaged (inference prototypes)."""
        return build_text_classifier(self.clef, self.space.descriptions, self.description_templates)

    def _texts(self, kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if kind == "names":
            return self.space.names, self.name_templates
        if kind == "negatives":
            return self.space.names, self.negative_templates
        if kind == "descriptions":
            return self.space.descriptions, self.description_templates
        raise ValueError(f"unknown text kind {kind!r}; valid: names, negatives, descriptions")

    def sampled_embeddings(self, kinds: Sequence[str], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Training prototypes: for each kind (``names``, ``negatives``, ``descriptions``) a (C, D)
        tensor, each class text put into one template drawn from ``generator`` (prompt augmentation,
        method.md §4), all kinds embedded in one text-tower pass.

        The draws are the same whether or not the tower is frozen; with a frozen tower every
        (text, template) pair is embedded once and cached, and the draws index the cache.
        """
        choices = {}
        for kind in kinds:
            texts, templates = self._texts(kind)
            choices[kind] = torch.randint(len(templates), (len(texts),), generator=generator)
        device = self.clef.logit_scale.device
        if self.clef.text_tower.is_frozen:
            out = {}
            for kind, choice in choices.items():
                table = self._table(kind).to(device)  # (C, T, D)
                out[kind] = table[torch.arange(len(choice), device=device), choice.to(device)]
            return out
        prompts: list[str] = []
        for kind, choice in choices.items():
            texts, templates = self._texts(kind)
            prompts += [templates[int(k)].replace("{}", t) for t, k in zip(texts, choice, strict=True)]
        if not prompts:
            return {}
        emb = self.clef.encode_text(self.clef.tokenize(prompts))
        sizes = [len(choice) for choice in choices.values()]
        return dict(zip(choices, emb.split(sizes), strict=True))

    def _table(self, kind: str) -> torch.Tensor:
        """(C, T, D) embeddings of every (text, template) pair of ``kind`` (frozen text tower only)."""
        if kind not in self._text_tables:
            texts, templates = self._texts(kind)
            with torch.no_grad():
                emb = [build_text_classifier(self.clef, texts, (tpl,), cache=False) for tpl in templates]
            self._text_tables[kind] = torch.stack(emb, dim=1)
        return self._text_tables[kind]

    def prototypes(self) -> torch.Tensor | None:
        """Inference prototypes: names (N), descriptions (D without N), the pair, or None (linear)."""
        if self.head_kind == "linear":
            return None
        if self.head_kind == "descriptions":
            return self.description_embeddings()
        names = self.name_embeddings()
        if self.au_prompt == "pair":
            return torch.stack([self.negative_embeddings(), names])
        return names

    def logits(self, image: torch.Tensor, prototypes: torch.Tensor | None) -> torch.Tensor:
        """(B, D) unit-norm image embeddings -> (B, C) logits."""
        if self.head_kind == "linear":
            return self.head(image)
        return self.head(image, prototypes.to(image.dtype), self.clef.scale())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, S, S) -> (B, C) logits with the inference prototypes."""
        return self.logits(self.clef.encode_image(images), self.prototypes())


def to_probabilities(task: str, logits: torch.Tensor) -> torch.Tensor:
    """AU: independent sigmoids; FER: softmax over the classes."""
    return torch.sigmoid(logits) if task == "au" else logits.softmax(dim=-1)


# -------------------------------------------------------------------------------------------- step
def au_pos_weights(targets: np.ndarray, mask: np.ndarray, cap: float = 10.0) -> torch.Tensor:
    """(J,) positive-class weights #negatives / #positives over coded labels, clipped to [1, cap].

    An AU without a positive coded label gets ``cap``.
    """
    t, m = np.asarray(targets, bool), np.asarray(mask, bool)
    pos = (t & m).sum(axis=0).astype(np.float64)
    neg = (~t & m).sum(axis=0).astype(np.float64)
    ratio = np.where(pos > 0, neg / np.maximum(pos, 1), cap)
    return torch.tensor(np.clip(ratio, 1.0, cap), dtype=torch.float32)


class Stage2Step:
    """``(model: FineTuneModel, batch) -> {"loss", "loss_task", "loss_dn", "logit_scale"}``.

    L_fine = L_IN + w · L_DN (method.md §4):

    * L_IN, FER: cross-entropy of the softmax over the C prototypes (``expression`` (B,) int64);
    * L_IN, AU: masked BCE of logit_j = scale·cos(v, t_j) + b_j (``au`` (B, J), ``au_mask`` (B, J));
    * the "I" baseline: the same losses on a linear head's logits;
    * L_DN: symmetric InfoNCE between descriptions and names, when ``method.description_loss``.

    Training prototypes put every class text into one template drawn from ``generator`` at each step
    (names and descriptions alike; ours: prompt augmentation, and one text pass of 2C short prompts
    instead of C x T); inference averages all templates (:meth:`FineTuneModel.prototypes`). With
    ``head = descriptions`` the prototypes are the descriptions.

    Args:
        method: :class:`MethodConfig`.
        augment: batched augmentation of the uint8 images, or None (images only scaled to [0, 1]).
        generator: CPU generator for the augmentation and the template draws (the engine saves it).
        pos_weight: (J,) AU positive-class weights, or None.
    """

    def __init__(
        self,
        method: MethodConfig,
        augment: BatchAugment | None,
        generator: torch.Generator,
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        self.method = method
        self.augment = augment
        self.generator = generator
        self.pos_weight = pos_weight

    def __call__(self, model: FineTuneModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        method = self.method
        images = self.augment(batch["image"], self.generator) if self.augment else to_float(batch["image"])
        v = model.clef.encode_image(model.clef.preprocess.normalize(images))  # (B, D)
        scale = model.clef.scale()
        kinds = []
        if model.head_kind == "descriptions":
            kinds = ["descriptions"]
        elif model.head_kind == "names":
            kinds = ["names"] + (["negatives"] if model.au_prompt == "pair" else [])
            kinds += ["descriptions"] if method.description_loss else []
        text = model.sampled_embeddings(kinds, self.generator)  # one text-tower pass
        if model.head_kind == "linear":
            protos = None
        elif model.head_kind == "descriptions":
            protos = text["descriptions"]
        elif model.au_prompt == "pair":
            protos = torch.stack([text["negatives"], text["names"]])
        else:
            protos = text["names"]
        logits = model.logits(v, protos)

        if model.space.task == "fer":
            loss_task = F.cross_entropy(logits.float(), batch["expression"])
        else:
            pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
            loss_task = masked_bce_loss(logits, batch["au"], batch["au_mask"], pos_weight)

        loss_dn = loss_task.new_zeros(())
        if "descriptions" in text and "names" in text:
            loss_dn = description_name_loss(text["descriptions"], text["names"], scale)
            if model.clef.text_tower.is_frozen:
                # Both sides fixed: only the logit scale could move, which L_DN is not meant to tune.
                loss_dn = loss_dn.detach()
        loss = loss_task + method.description_weight * loss_dn
        return {
            "loss": loss,
            "loss_task": loss_task.detach(),
            "loss_dn": loss_dn.detach(),
            "logit_scale": scale.detach(),
        }


def stage2_param_groups(model: FineTuneModel, optim: OptimConfig) -> dict[str, ParamGroup]:
    """Trainable parameters by learning rate: ``image``, ``text`` (small), ``other``, ``head``.

    Call after locking (:func:`build_finetune_model` does): locked parameters are left out. Empty
    groups are omitted.
    """
    groups = model.clef.param_groups()
    out = {
        "image": ParamGroup(groups["image"], optim.lr_image),
        "text": ParamGroup(groups["text"], optim.lr_text),
        "other": ParamGroup(groups["other"], optim.lr_other),
        "head": ParamGroup([p for p in model.head.parameters() if p.requires_grad], optim.lr_head),
    }
    return {k: g for k, g in out.items() if list(g.params)}


# -------------------------------------------------------------------------------------- assembly
def build_backbone(init: InitConfig, fold: int | None = None) -> tuple[ClefModel, dict[str, Any]]:
    """The dual encoder a run starts from, and a description of where it came from.

    Raises:
        UserError: ``{fold}`` in the checkpoint path without a fold; a missing or foreign checkpoint.
    """
    if init.checkpoint:
        path = str(init.checkpoint)
        if "{fold}" in path:
            if fold is None:
                raise UserError(f"init.checkpoint {path!r} contains {{fold}} but data.fold is not set")
            path = path.replace("{fold}", str(fold))
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


def build_finetune_model(clef: ClefModel, space: LabelSpace, method: MethodConfig) -> FineTuneModel:
    """Wrap ``clef`` for ``method``, with locking applied.

    The "I" baseline uses no text: its text tower and logit scale are frozen (so no optimiser state
    and no DDP unused-parameter trouble). ``text_tower: lock`` freezes the whole text tower, which
    makes the name and description embeddings fixed and cached; ``text_trainable_blocks: k`` leaves
    only the text tower's last k blocks and head trainable.
    """
    method.validate()
    if method.task != space.task:
        raise UserError(f"method.task={method.task!r} but the label space is for {space.task!r}")
    prompts = load_prompt_set(method.prompt_set)
    model = FineTuneModel(
        clef,
        space,
        head=method.head,
        name_templates=prompts.name_templates,
        description_templates=prompts.description_templates,
        au_prompt=method.au_prompt,
        negative_templates=method.negative_templates,
    )
    if method.head == "linear":
        clef.lock_text_tower(0)
        clef.logit_scale.requires_grad_(False)
    elif method.text_tower == "lock":
        clef.lock_text_tower(0)
    elif method.text_trainable_blocks is not None:
        clef.lock_text_tower(method.text_trainable_blocks)
    return model


def split_records(records: pd.DataFrame, data: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) records: the fold's subject-exclusive split, or the ``split`` column."""
    if data.fold is not None:
        return split_fold(records, data.fold, records.attrs.get("protocol"))
    if "split" not in records or records["split"].isna().all():
        raise UserError(
            f"dataset {data.dataset!r} has no official split; set data.fold to a fold of its protocol"
        )
    train = records[records["split"] == data.train_split]
    test = records[records["split"] == data.test_split]
    if train.empty:
        splits = sorted(records["split"].dropna().unique())
        raise UserError(f"no record has split {data.train_split!r}; the dataset's splits: {splits}")
    return train, test


def resolve_labels(records: pd.DataFrame, data: DataConfig, task: str) -> tuple:
    """AU numbers (task "au") or class names (task "fer") the run uses, in output order."""
    if task == "au":
        present = record_aus(records)
        aus = tuple(data.aus) or tuple(a for a in BENCHMARK_AUS.get(data.dataset, present) if a in present)
        missing = [a for a in aus if a not in present]
        if missing or not aus:
            raise UserError(
                f"dataset {data.dataset!r} has no labels for AU {missing or '(none)'}; "
                f"it codes: {', '.join(map(str, present)) or 'none'}"
            )
        return aus
    if data.classes:
        return tuple(data.classes)
    own = records.attrs.get("classes")
    if own:
        return tuple(own)
    present = set(records["expression"].dropna())
    classes = tuple(e for e in EXPRESSIONS if e in present)
    if not classes:
        raise UserError(f"dataset {data.dataset!r} has no expression labels")
    return classes


def _fer_trainable(records: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    return records[records["expression"].isin(list(classes)).fillna(False).astype(bool)]


def _dataset(records: pd.DataFrame, space: LabelSpace, image_size: int) -> ImageRecords:
    if space.task == "au":
        return ImageRecords(records, image_size, aus=space.aus, expressions=None)
    return ImageRecords(records, image_size, expressions=space.labels)


# ------------------------------------------------------------------------------------- prediction
@torch.no_grad()
def embed_images(
    clef: ClefModel,
    records: pd.DataFrame,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = True,
    desc: str = "embedding",
) -> torch.Tensor:
    """(N, D) unit-norm image embeddings of every record, in table order, on the CPU (no augmentation).

    ``clef`` must already be on ``device``; it runs in eval mode and gets its train/eval mode back.
    """
    dataset = ImageRecords(records, clef.preprocess.image_size, expressions=None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    was_training = clef.training
    clef.eval()
    out = []
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            x = clef.preprocess.normalize(to_float(batch["image"].to(device)))
            out.append(clef.encode_image(x).float().cpu())
    finally:
        clef.train(was_training)
    if not out:
        return torch.zeros(0, clef.embed_dim)
    return torch.cat(out)


@dataclass
class Predictions:
    """Scores of N records for the labels of ``labels`` (column order): (N, C) arrays."""

    task: str
    labels: tuple[str, ...]
    logits: np.ndarray
    probabilities: np.ndarray

    def predicted_classes(self) -> np.ndarray:
        """(N,) arg-max class index (FER)."""
        return self.probabilities.argmax(axis=1)


@torch.no_grad()
def predict(
    model: FineTuneModel,
    records: pd.DataFrame,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = True,
) -> Predictions:
    """Score ``records`` with a fine-tuned model's own head and label texts."""
    model.eval()
    emb = embed_images(model.clef, records, batch_size, device, workers, progress).to(device)
    protos = model.prototypes()
    logits = torch.cat([model.logits(emb[i : i + 4096], protos) for i in range(0, len(emb), 4096)])
    probs = to_probabilities(model.space.task, logits)
    return Predictions(
        model.space.task, model.space.labels, logits.float().cpu().numpy(), probs.cpu().numpy()
    )


@torch.no_grad()
def predict_texts(
    clef: ClefModel,
    records: pd.DataFrame,
    labels: Sequence[str],
    texts: Sequence[str],
    templates: Sequence[str],
    task: str = "fer",
    bias: torch.Tensor | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = True,
) -> Predictions:
    """Score ``records`` against arbitrary label texts (zero-shot): logit_c = scale·cos(v, t_c) (+ bias_c).

    ``texts`` (one per label) go through ``templates`` (averaged); ``task`` picks softmax ("fer") or
    sigmoids ("au").
    """
    if len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels but {len(texts)} texts")
    clef.eval()
    emb = embed_images(clef, records, batch_size, device, workers, progress).to(device)
    protos = build_text_classifier(clef, list(texts), list(templates))
    logits = clef.scale() * emb @ protos.t()
    if bias is not None:
        logits = logits + bias.to(logits.device)
    probs = to_probabilities(task, logits)
    return Predictions(task, tuple(labels), logits.float().cpu().numpy(), probs.cpu().numpy())


def evaluate_predictions(predictions: Predictions, records: pd.DataFrame) -> AUResult | FERResult:
    """Metrics of ``predictions`` against the labels of ``records`` (same rows, same order).

    AU: per-AU F1 at 0.5 with uncoded labels excluded. FER: accuracy, mean class accuracy, macro-F1,
    confusion; every record must carry one of the predicted classes.

    Raises:
        UserError: a needed AU column is missing, or a record's expression is not a predicted class.
    """
    if len(records) != len(predictions.probabilities):
        raise ValueError(f"{len(records)} records but {len(predictions.probabilities)} predictions")
    if predictions.task == "au":
        aus = [int(label[2:]) for label in predictions.labels]
        missing = [a for a in aus if au_column(a) not in records.columns]
        if missing:
            raise UserError(f"the records have no labels for AU {missing}")
        targets, mask = au_targets(records, aus)
        return evaluate_au(predictions.probabilities, targets, mask, aus)
    lookup = {name: k for k, name in enumerate(predictions.labels)}
    expressions = records["expression"].astype(object).where(records["expression"].notna(), None)
    unknown = sorted({str(e) for e in expressions if e not in lookup})
    if unknown:
        raise UserError(
            f"records carry expressions {unknown} that the model does not predict "
            f"(its classes: {', '.join(predictions.labels)}); select matching records first"
        )
    target = np.array([lookup[e] for e in expressions], dtype=np.int64)
    return evaluate_fer(predictions.predicted_classes(), target, predictions.labels)


# ------------------------------------------------------------------------------------- checkpoints
def save_finetuned(
    path: str | Path,
    model: FineTuneModel,
    *,
    training_config: Any = None,
    metrics: dict[str, Any] | None = None,
    notes: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``NAME.safetensors`` + ``NAME.json``: the dual encoder, the head (extra tensors
    ``head.*``), labels in output order, thresholds 0.5 (AU), and the texts and templates needed to
    rebuild the prototypes without the prompt file."""
    space = model.space
    stage2 = {
        "task": space.task,
        "head": model.head_kind,
        "au_prompt": model.au_prompt,
        "labels": list(space.labels),
        "names": list(space.names),
        "descriptions": list(space.descriptions),
        "name_templates": list(model.name_templates),
        "description_templates": list(model.description_templates),
        "negative_templates": list(model.negative_templates),
    }
    prompt_set = getattr(getattr(training_config, "method", None), "prompt_set", None)
    return save_checkpoint(
        path,
        model.clef,
        prompt_set=prompt_set,
        labels=space.labels,
        task=space.task,
        thresholds={label: 0.5 for label in space.labels} if space.task == "au" else None,
        training_config=training_config,
        metrics=metrics,
        extra_tensors={f"head.{k}": v for k, v in model.head.state_dict().items()},
        notes={"stage2": stage2, **(notes or {})},
    )


def load_finetuned(path: str | Path, device: str | torch.device = "cpu") -> tuple[FineTuneModel, dict]:
    """Rebuild a model written by :func:`save_finetuned` -> ``(model in eval mode, sidecar meta)``.

    Raises:
        UserError: the checkpoint is not a stage-2 checkpoint (e.g. a stage-1 one).
    """
    clef, meta = load_checkpoint(path, device=device)
    stage2 = (meta.get("notes") or {}).get("stage2")
    if not stage2:
        raise UserError(f"{path}: not a fine-tuned (stage-2) checkpoint; it has no label head")
    space = LabelSpace(
        stage2["task"], tuple(stage2["labels"]), tuple(stage2["names"]), tuple(stage2["descriptions"])
    )
    model = FineTuneModel(
        clef,
        space,
        head=stage2["head"],
        name_templates=stage2["name_templates"],
        description_templates=stage2["description_templates"],
        au_prompt=stage2["au_prompt"],
        negative_templates=stage2["negative_templates"],
    )
    head_state = {k[len("head.") :]: v for k, v in meta["extra_tensors"].items() if k.startswith("head.")}
    model.head.load_state_dict(head_state, strict=True)
    return model.to(device).eval(), meta


# -------------------------------------------------------------------------------------------- run
@dataclass
class FinetuneResult:
    """What :func:`finetune` produced."""

    run_dir: Path
    checkpoint: Path  # NAME (the .safetensors / .json pair)
    result: AUResult | FERResult | None  # test metrics (None when evaluate=false or no test records)
    n_train: int
    n_test: int
    train_seconds: float
    init: dict[str, Any]


def finished_run(cfg: FinetuneConfig) -> FinetuneResult | None:
    """The result of a run that already finished in ``cfg.run_dir`` with exactly this config, else None.

    A run counts as finished when ``run_dir/model.{safetensors,json}`` exist and the sidecar's recorded
    ``training_config`` equals ``cfg`` (after a JSON round trip); its test metrics come from the sidecar.
    """
    checkpoint = Path(cfg.run_dir) / "model"
    meta = finished_with(checkpoint, cfg)
    if meta is None:
        return None
    metrics, notes = meta.get("metrics"), meta.get("notes") or {}
    result: AUResult | FERResult | None = None
    if metrics and cfg.method.task == "au":
        result = AUResult(metrics["aus"], metrics["f1"], metrics["base_rate"], metrics["n_coded"])
    elif metrics:
        result = FERResult(**metrics)
    return FinetuneResult(
        Path(cfg.run_dir),
        checkpoint,
        result,
        int(notes.get("n_train", 0)),
        int(notes.get("n_test", 0)),
        float(notes.get("train_seconds", 0.0)),
        notes.get("init", {}),
    )


def finetune(
    cfg: FinetuneConfig,
    records: pd.DataFrame | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
    train_records: pd.DataFrame | None = None,
    test_records: pd.DataFrame | None = None,
    reuse: bool = False,
) -> FinetuneResult:
    """Run stage 2 as ``cfg`` says and write ``run_dir/model.{safetensors,json}`` (+ ``eval/``).

    Args:
        cfg: the run.
        records: the dataset's record table (loaded from ``cfg.data`` when None).
        progress: progress bars.
        resume: an engine checkpoint (``run_dir/checkpoint.pt``) to continue from.
        train_records / test_records: explicit selections (e.g. a zero-shot protocol's seen classes);
            when given they replace the split of ``records``.
        reuse: return :func:`finished_run`'s result, without training, when ``run_dir`` holds a finished
            run of exactly this config (re-running an interrupted batch of runs redoes only what is
            missing).

    Returns:
        :class:`FinetuneResult`.
    """
    run_dir = Path(cfg.run_dir)
    if reuse and resume is None and (done := finished_run(cfg)) is not None:
        return done
    seed_everything(cfg.seed)
    if train_records is None:
        if records is None:
            from clef.data import load_dataset

            records = load_dataset(cfg.data.dataset, cfg.data.root)
        train_records, test_records = split_records(records, cfg.data)
    method = cfg.method
    labels = resolve_labels(records if records is not None else train_records, cfg.data, method.task)
    space = label_space(
        method.task,
        load_prompt_set(method.prompt_set),
        aus=labels if method.task == "au" else (),
        classes=labels if method.task == "fer" else (),
    )
    if method.task == "fer":
        train_records = _fer_trainable(train_records, space.labels)
    if cfg.data.train_limit is not None and len(train_records) > cfg.data.train_limit:
        train_records = train_records.sample(n=cfg.data.train_limit, random_state=cfg.seed)
    if train_records.empty:
        raise UserError("no training records left after the split and label selection")

    clef, init = build_backbone(cfg.init, cfg.data.fold)
    model = build_finetune_model(clef, space, method).to(cfg.device)
    generator = torch.Generator().manual_seed(cfg.seed)
    augment = None
    if method.augment:
        augment = BatchAugment(dataclasses.replace(cfg.augment, size=clef.preprocess.image_size))
    pos_weight = None
    if method.task == "au" and method.au_pos_weight == "balanced":
        pos_weight = au_pos_weights(*au_targets(train_records, space.aus), cap=method.au_pos_weight_max)
    step = Stage2Step(method, augment, generator, pos_weight)

    dataset = _dataset(train_records.reset_index(drop=True), space, clef.preprocess.image_size)
    sampler = RandomBatchSampler(len(dataset), cfg.data.batch_size, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=cfg.data.workers, persistent_workers=cfg.data.workers > 0
    )
    engine = dataclasses.replace(cfg.engine, progress=cfg.engine.progress and progress)
    start = time.perf_counter()
    train(
        model,
        step,
        stage2_param_groups(model, cfg.optim),
        loader,
        engine,
        run_dir,
        device=cfg.device,
        generators={"stage2": generator},
        run_config=cfg,
        resume=resume,
    )
    seconds = time.perf_counter() - start

    result = None
    n_test = 0 if test_records is None else len(test_records)
    if cfg.evaluate and n_test:
        if method.task == "fer":
            test_records = _fer_trainable(test_records, space.labels)
            n_test = len(test_records)
        predictions = predict(
            model, test_records, cfg.data.eval_batch_size, cfg.device, cfg.data.workers, progress
        )
        result = evaluate_predictions(predictions, test_records)
        write_result(result, run_dir / "eval", title=f"{cfg.data.dataset} test")
    checkpoint = run_dir / "model"
    save_finetuned(
        checkpoint,
        model,
        training_config=cfg,
        metrics=None if result is None else result.to_dict(),
        notes={"init": init, "n_train": len(train_records), "n_test": n_test, "train_seconds": seconds},
    )
    return FinetuneResult(run_dir, checkpoint, result, len(train_records), n_test, seconds, init)


def write_result(result: AUResult | FERResult, out: Path, title: str) -> list[Path]:
    """Write an AU or FER result as JSON + CSV + markdown + plot (:mod:`clef.evaluation`)."""
    from clef.evaluation import write_au_result, write_fer_result

    if isinstance(result, AUResult):
        return write_au_result(result, Path(out), title=title)
    return write_fer_result(result, Path(out), title=title)
