"""The CLEF dual encoder (docs/method.md §2): image tower + text tower projected into one space.

The contract is deliberately small (what every backbone must provide, and nothing more):

- ``encode_image(images (B, 3, H, W)) -> (B, D)`` and ``encode_text(tokens) -> (N, D)`` return
  L2-normalised embeddings;
- ``tokenize(texts) -> dict[str, Tensor]`` runs the text tower's own tokenizer;
- ``logit_scale`` is a learnable scalar in log space (CLIP init ``log(1/0.07)``); ``scale()`` returns
  ``exp(logit_scale)`` clamped at 100, which is what a loss multiplies cosine similarities by;
- ``preprocess`` holds the image size, mean and std the image tower expects.

The model computes no loss. Each tower is a :class:`Tower`: a sequence of blocks followed by a
"head" (final norm, pooling, projection), which is what locking "all but the last k blocks" needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from clef.errors import UserError

# CLIP's initial temperature (1/0.07) and the ceiling of the scale (docs/method.md §2).
INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_SCALE = 100.0


@dataclass(frozen=True)
class Preprocess:
    """What an image must look like before ``encode_image``: square side ``image_size`` (pixels),
    RGB in [0, 1], then normalised per channel as ``(x - mean) / std``."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def normalize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) floats in [0, 1] -> normalised, on the input's device and dtype."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std


class FrozenCache:
    """What frozen parameters compute, kept until any of them changes: the project's one caching rule.

    Used for a frozen text tower's embeddings (:meth:`ClefModel.embed_texts`) and for a tower's
    frozen leading blocks (e.g. :class:`clef.model.minilm.MiniLMTower`). :meth:`table` returns the
    dict to read and fill for the given parameters; it is emptied whenever one of them was written
    in place (optimiser steps and ``load_state_dict`` bump a tensor's version counter) or replaced
    (``.data`` reassigned), and kept apart per device and dtype of ``like``. Callers store values
    computed without gradients, and only from parameters none of which is trainable.
    """

    def __init__(self) -> None:
        self._state: tuple | None = None
        self._tables: dict[tuple, dict] = {}

    def table(self, params, like: Tensor) -> dict:
        state = tuple((p._version, p.data_ptr()) for p in params)
        if state != self._state:
            self._state, self._tables = state, {}
        return self._tables.setdefault((str(like.device), like.dtype), {})


class Tower(nn.Module):
    """One encoder with its projection to the shared space.

    Subclasses implement ``forward(inputs) -> (B, D)`` (unnormalised), ``blocks()`` (the repeated
    blocks, input side first) and ``head()`` (the modules after the last block: final norm,
    projection). ``projection_parameters()`` names the parameters of the linear map into the shared
    space; :meth:`ClefModel.param_groups` files them under "other". Subclasses set ``embed_dim``.
    """

    embed_dim: int
    # True for transformer towers, which implement attention_forward (clef.explain reads it to choose
    # attention relevance over the class-activation map of the last block's feature map).
    has_attention: bool = False

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def attention_forward(self, inputs: Any) -> tuple[Tensor, list[Tensor], Tensor]:
        """The forward pass plus what attention relevance needs (towers with ``has_attention``).

        Returns ``(output, attentions, pooling)``: the (B, D) output :meth:`forward` gives; the
        attention probabilities of every block, input side first, each (B, heads, L, L) with rows =
        queries, in the autograd graph of ``output``; and ``pooling`` (B, L), how much each of the last
        block's L tokens contributes to the output (class-token pooling: one-hot at that token; masked
        mean pooling: mask / count).

        Raises:
            NotImplementedError: the tower has no attention (a CNN).
        """
        raise NotImplementedError(f"{type(self).__name__} has no attention maps")

    def head(self) -> list[nn.Module]:
        raise NotImplementedError

    def projection_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def lock(self, unlocked_last_k: int = 0) -> None:
        """Freeze the tower; with ``unlocked_last_k > 0`` keep the last k blocks and the head trainable.

        ``unlocked_last_k = 0`` freezes everything, projection included: the tower is then *frozen*
        (:attr:`is_frozen`), its embeddings are a fixed function, and :class:`ClefModel` keeps it in
        eval mode and caches its text embeddings.
        """
        blocks = self.blocks()
        if not 0 <= unlocked_last_k <= len(blocks):
            raise UserError(
                f"unlocked_last_k must be between 0 and {len(blocks)} (the number of blocks), "
                f"got {unlocked_last_k}"
            )
        for p in self.parameters():
            p.requires_grad_(False)
        if unlocked_last_k > 0:
            for module in [*blocks[len(blocks) - unlocked_last_k :], *self.head()]:
                for p in module.parameters():
                    p.requires_grad_(True)
        self.train(self.training)  # the frozen parts to eval mode

    def unlock(self) -> None:
        """Make every parameter of the tower trainable again."""
        for p in self.parameters():
            p.requires_grad_(True)
        self.train(self.training)

    @property
    def is_frozen(self) -> bool:
        """True when no parameter of the tower is trainable: the project's one meaning of "frozen"."""
        return not any(p.requires_grad for p in self.parameters())

    def train(self, mode: bool = True) -> Tower:
        """As ``nn.Module.train``, but every frozen part (a submodule with parameters, none of them
        trainable: locked leading blocks, a locked stem or embedding layer) stays in eval mode, so its
        dropout and normalisation statistics never change what it computes (it is a fixed function,
        which is what lets its outputs be cached)."""
        super().train(mode)
        if mode:
            for module in self.modules():
                params = list(module.parameters())
                if params and not any(p.requires_grad for p in params):
                    module.eval()
        return self


class ClefModel(nn.Module):
    """Image tower + text tower + learnable logit scale.

    Args:
        image_tower: maps normalised images (B, 3, S, S), S = ``preprocess.image_size``, to (B, D).
        text_tower: maps the output of ``tokenizer`` to (N, D).
        tokenizer: ``list[str] -> dict[str, Tensor]`` (the text tower's own tokenizer).
        preprocess: the image preprocessing the image tower expects.
        backbone: registry name this model was built from (stored in checkpoints).
        backbone_config: the frozen config dataclass that rebuilds the architecture.
        init_logit_scale: initial value of ``logit_scale`` (log space).
    """

    def __init__(
        self,
        image_tower: Tower,
        text_tower: Tower,
        tokenizer: Callable[[list[str]], dict[str, Tensor]],
        preprocess: Preprocess,
        backbone: str,
        backbone_config: Any,
        init_logit_scale: float = INIT_LOGIT_SCALE,
    ) -> None:
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self._tokenizer = tokenizer
        self.preprocess = preprocess
        self.backbone = backbone
        self.backbone_config = backbone_config
        self._text_cache = FrozenCache()  # see embed_texts

    # --- the contract -------------------------------------------------------------------------
    def encode_image(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) normalised images -> (B, D) unit-norm embeddings."""
        return nn.functional.normalize(self.image_tower(images), dim=-1)

    def encode_text(self, tokens: dict[str, Tensor]) -> Tensor:
        """Output of :meth:`tokenize` -> (N, D) unit-norm embeddings (tokens moved to the model's device)."""
        device = self.logit_scale.device
        tokens = {k: v.to(device) for k, v in tokens.items()}
        return nn.functional.normalize(self.text_tower(tokens), dim=-1)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Texts -> the text tower's token tensors (CPU, padded to the longest text)."""
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of strings, not one string")
        return self._tokenizer(list(texts))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """The readable form of each token id of one tokenised text (the id itself as text when the
        tokenizer cannot name its tokens)."""
        names = getattr(self._tokenizer, "token_strings", None)
        return names(ids) if names is not None else [str(int(i)) for i in ids]

    def special_token_ids(self) -> frozenset[int]:
        """Ids of the tokenizer's markers (start, end, padding); empty when the tokenizer does not say."""
        return frozenset(getattr(self._tokenizer, "special_ids", ()))

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """(N, D) unit-norm embeddings of ``texts``, tokenised and encoded ``batch_size`` at a time.

        While the text tower is frozen (:attr:`Tower.is_frozen`) each text's embedding is computed
        once, without gradients, and reused (:class:`FrozenCache`: keyed by the text, emptied when a
        text-tower parameter changes). A text tower with any trainable part is run on every call,
        with gradients when they are enabled (and caches its own frozen leading blocks, if any).
        """
        if isinstance(texts, str):
            raise TypeError("embed_texts expects a list of strings, not one string")
        texts = list(texts)
        if not self.text_tower.is_frozen:
            return self._encode_texts(texts, batch_size)
        table = self._text_cache.table(self.text_tower.parameters(), self.logit_scale)
        missing = list(dict.fromkeys(t for t in texts if t not in table))
        if missing:
            with torch.no_grad():
                table.update(zip(missing, self._encode_texts(missing, batch_size), strict=True))
        return (
            torch.stack([table[t] for t in texts]) if texts else self.logit_scale.new_zeros(0, self.embed_dim)
        )

    def _encode_texts(self, texts: list[str], batch_size: int) -> Tensor:
        if not texts:
            return self.logit_scale.new_zeros(0, self.embed_dim)
        parts = [
            self.encode_text(self.tokenize(texts[i : i + batch_size]))
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(parts)

    def scale(self) -> Tensor:
        """exp(logit_scale) clamped at 100 (docs/method.md §2): the factor on cosine similarities."""
        return self.logit_scale.exp().clamp(max=MAX_SCALE)

    @property
    def embed_dim(self) -> int:
        """D, the size of the shared embedding space."""
        return int(self.image_tower.embed_dim)

    # --- locking ------------------------------------------------------------------------------
    def lock_image_tower(self, unlocked_last_k: int = 0) -> None:
        """Freeze the image tower (all of it, or all but its last ``unlocked_last_k`` blocks + head)."""
        self.image_tower.lock(unlocked_last_k)

    def lock_text_tower(self, unlocked_last_k: int = 0) -> None:
        """Freeze the text tower (all of it, or all but its last ``unlocked_last_k`` blocks + head)."""
        self.text_tower.lock(unlocked_last_k)

    def unlock_image_tower(self) -> None:
        self.image_tower.unlock()

    def unlock_text_tower(self) -> None:
        self.text_tower.unlock()

    # ``train(mode)`` reaches both towers, and :meth:`Tower.train` keeps their frozen parts in eval
    # mode (a frozen tower entirely), so their embeddings stay fixed.

    # --- optimiser support ----------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by learning-rate group.

        - ``"image"``: the image encoder body (everything in the image tower but its projection);
        - ``"text"``: the text encoder body (a smaller learning rate is meant for it, docs/method.md §4);
        - ``"other"``: both projections into the shared space and ``logit_scale``. The projections go
          here because for the offline backbone they are new layers on a pretrained text encoder, and
          a small learning rate would leave them near their random start.

        Only parameters with ``requires_grad`` are listed, so call this after locking.
        """
        projections = {
            id(p) for tower in (self.image_tower, self.text_tower) for p in tower.projection_parameters()
        }
        groups: dict[str, list[nn.Parameter]] = {"image": [], "text": [], "other": []}
        for key, tower in (("image", self.image_tower), ("text", self.text_tower)):
            for p in tower.parameters():
                if p.requires_grad:
                    groups["other" if id(p) in projections else key].append(p)
        if self.logit_scale.requires_grad:
            groups["other"].append(self.logit_scale)
        return groups
