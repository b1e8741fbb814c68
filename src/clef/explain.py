"""What a prompt looks at: an image relevance map and each prompt token's relevance (docs/method.md §7).

The paper visualises a prompt's match with a face as a saliency map on the image and a relevance
value per token of the prompt. :func:`explain` computes both for one aligned face and one text, for
the score the model ranks labels by, s = scale · cos(v, t) (image embedding v, text embedding t):

* **CNN image towers** (no attention; the small residual CNN, any tower whose blocks are
  convolutional stages): Grad-CAM (Selvaraju et al., 2017) on the output of the tower's last block,
  read with a forward hook on ``tower.blocks()[-1]``. With A (C, h, w) that feature map,
  α_c = mean over (h, w) of ∂s/∂A_c and the map is ReLU(Σ_c α_c A_c): (h, w).
* **Transformer towers** (``Tower.has_attention``: the small ViT, CLIP's two towers, MiniLM): the
  gradient-weighted attention relevance of Chefer, Gur and Wolf (ICCV 2021, "Generic
  attention-model explainability"), self-attention rule. R starts as the identity (L × L) and, block
  by block from the input side, R ← R + Ā R with Ā = mean over heads of (∇A ⊙ A)⁺, A the block's
  attention probabilities and ∇A = ∂s/∂A. Row i of R is the relevance of every input token for
  output token i; the tower's output reads its last tokens with the weights ``pooling``
  (:meth:`clef.model.Tower.attention_forward`), so token relevance = pooling · (R − I). The identity
  (each token passing itself along the residual stream) is left out: it says nothing about which
  token matters (under MiniLM's mean pooling it is the same 1/T for every token), and it is the
  part Chefer et al. drop too when they read the class token's row without the class token itself.
  Image: the patch tokens' relevance on the patch grid. Text: every token's.

One backward pass gives both sides: the gradient of the same s reaches the image tower's feature map
or attention and the text tower's attention. Maps are ≥ 0 by construction (a ReLU or a sum of
positive parts on the identity).

Shapes: :class:`Explanation` ``grid`` (h, w) at the tower's resolution, ``heatmap`` (S, S) = the grid
resized bilinearly to the face and divided by its maximum (all zeros stays all zeros),
``token_relevance`` (T,) over the prompt's T tokens (start/end markers included, flagged in
``special``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clef.augment import to_float
from clef.model import ClefModel

__all__ = [
    "Explanation",
    "explain",
    "grad_cam",
    "attention_relevance",
    "plot_explanations",
    "save_explanations",
]

GRAD_CAM = "grad-cam"
ATTENTION = "attention relevance"


@dataclass
class Explanation:
    """One face and one prompt: the score, the image relevance, the token relevance (module docstring)."""

    text: str
    score: float
    method: str
    image: np.ndarray  # (S, S, 3) uint8, the model's input
    grid: np.ndarray  # (h, w) float, >= 0
    heatmap: np.ndarray  # (S, S) float in [0, 1]
    tokens: list[str]
    token_relevance: np.ndarray  # (T,) float, >= 0
    special: np.ndarray  # (T,) bool: the tokenizer's start/end markers


def grad_cam(features: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM of a feature map: (B, C, h, w) activations and ∂s/∂activations -> (B, h, w) >= 0."""
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # α_c: (B, C, 1, 1)
    return torch.relu((weights * features).sum(dim=1))


def attention_relevance(attentions: Sequence[Tensor], gradients: Sequence[Tensor]) -> Tensor:
    """Chefer et al.'s self-attention relevance: per block (B, H, L, L) probabilities and their gradients,
    input side first -> R (B, L, L), R = Π (I + Ā_l) applied in block order, Ā = E_h[(∇A ⊙ A)⁺]."""
    b, _, n, _ = attentions[0].shape
    relevance = torch.eye(n, device=attentions[0].device, dtype=torch.float32).expand(b, n, n)
    for a, g in zip(attentions, gradients, strict=True):
        a_bar = (g.float() * a.float()).clamp(min=0).mean(dim=1)
        relevance = relevance + a_bar @ relevance
    return relevance


def _pooled_relevance(pooling: Tensor, relevance: Tensor) -> Tensor:
    """(1, L) pooling weights and (1, L, L) R -> (L,) relevance of each input token, pooling · (R − I)."""
    eye = torch.eye(relevance.shape[-1], device=relevance.device, dtype=relevance.dtype)
    return (pooling[:, None, :].to(relevance.dtype) @ (relevance - eye))[0, 0]


@contextmanager
def _gradients_on(module: torch.nn.Module) -> Iterator[None]:
    """Every parameter of ``module`` requires gradients inside the block (frozen towers too, so their
    attention is part of the graph); the flags come back afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def _last_block_output(tower) -> Iterator[list[Tensor]]:
    outputs: list[Tensor] = []
    handle = tower.blocks()[-1].register_forward_hook(lambda m, args, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()


def explain(clef: ClefModel, face: np.ndarray | Tensor, text: str) -> Explanation:
    """Relevance of one aligned face's regions and one prompt's tokens for s = scale · cos(v, t).

    Args:
        clef: the dual encoder (e.g. ``FineTuneModel.clef``); its train/eval mode is kept, its
            parameters are not changed.
        face: (S, S, 3) uint8 array or (3, S, S) uint8 tensor at the model's input size S.
        text: the prompt exactly as scored (put it into a template first if the model expects one).

    Raises:
        ValueError: the face is not S × S RGB at the model's size.
    """
    size = clef.preprocess.image_size
    image = torch.as_tensor(np.asarray(face)) if not isinstance(face, Tensor) else face
    if image.shape == (size, size, 3):
        image = image.permute(2, 0, 1)
    if tuple(image.shape) != (3, size, size) or image.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 face of {size}x{size}x3, got {tuple(image.shape)} {image.dtype}")
    device = clef.logit_scale.device
    x = clef.preprocess.normalize(to_float(image[None].to(device)))
    tokens = clef.tokenize([text])
    tokens = {k: v.to(device) for k, v in tokens.items()}
    was_training = clef.training
    clef.eval()
    tower = clef.image_tower
    try:
        with _gradients_on(clef):
            if tower.has_attention:
                v, image_attn, image_pool = tower.attention_forward(x)
                targets = list(image_attn)
            else:
                with _last_block_output(tower) as outputs:
                    v = tower(x)
                targets = list(outputs)
            t, text_attn, text_pool = clef.text_tower.attention_forward(tokens)
            score = clef.scale() * F.cosine_similarity(v, t)[0]
            grads = torch.autograd.grad(score, [*targets, *text_attn], allow_unused=True)
    finally:
        clef.train(was_training)
    image_grads, text_grads = grads[: len(targets)], grads[len(targets) :]
    image_grads = [
        g if g is not None else torch.zeros_like(a) for g, a in zip(image_grads, targets, strict=True)
    ]
    text_grads = [
        g if g is not None else torch.zeros_like(a) for g, a in zip(text_grads, text_attn, strict=True)
    ]
    with torch.no_grad():
        if tower.has_attention:
            per_token = _pooled_relevance(image_pool, attention_relevance(targets, image_grads))
            patches = per_token[1:]  # the class token is not a region of the image
            side = int(round(patches.numel() ** 0.5))
            grid = patches.reshape(side, side)
            method = ATTENTION
        else:
            grid = torch.cat([grad_cam(a.detach(), g) for a, g in zip(targets, image_grads, strict=True)])[0]
            method = GRAD_CAM
        token_relevance = _pooled_relevance(text_pool, attention_relevance(text_attn, text_grads))
    heatmap = F.interpolate(
        grid[None, None].float(), size=(size, size), mode="bilinear", align_corners=False
    )[0, 0]
    heatmap = heatmap.clamp(min=0)
    heatmap = heatmap / heatmap.max() if heatmap.max() > 0 else heatmap
    ids = tokens["input_ids"][0][tokens["attention_mask"][0].bool()].tolist()
    special = clef.special_token_ids()
    return Explanation(
        text=text,
        score=float(score.detach()),
        method=method,
        image=image.permute(1, 2, 0).cpu().numpy(),
        grid=grid.float().cpu().numpy(),
        heatmap=heatmap.cpu().numpy(),
        tokens=clef.token_strings(ids),
        token_relevance=token_relevance[: len(ids)].float().cpu().numpy(),
        special=np.array([i in special for i in ids], dtype=bool),
    )


# ------------------------------------------------------------------------------------------- files
def save_explanations(explanations: Sequence[Explanation], prefix: str | Path) -> list[Path]:
    """Write ``PREFIX.png`` (:func:`plot_explanations`) and ``PREFIX.npz`` with, per prompt k,
    ``text_k``, ``score_k``, ``grid_k`` (h, w), ``heatmap_k`` (S, S), ``tokens_k``, ``token_relevance_k``,
    ``special_k``, and the ``image`` (S, S, 3) uint8 and ``method`` shared by all."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png, npz = prefix.with_name(prefix.name + ".png"), prefix.with_name(prefix.name + ".npz")
    arrays: dict[str, np.ndarray] = {
        "image": explanations[0].image,
        "method": np.array(explanations[0].method),
    }
    for k, e in enumerate(explanations):
        arrays |= {
            f"text_{k}": np.array(e.text),
            f"score_{k}": np.array(e.score),
            f"grid_{k}": e.grid,
            f"heatmap_{k}": e.heatmap,
            f"tokens_{k}": np.array(e.tokens),
            f"token_relevance_{k}": e.token_relevance,
            f"special_{k}": e.special,
        }
    np.savez_compressed(npz, **arrays)
    plot_explanations(explanations, png)
    return [png, npz]


def plot_explanations(explanations: Sequence[Explanation], path: str | Path) -> Path:
    """One row per prompt: the face, its relevance heat map over the face, and the prompt's tokens
    on a background as dark as their relevance (markers in grey; each row scaled to its own maximum)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = len(explanations)
    fig = Figure(figsize=(8.4, 2.3 * rows))
    FigureCanvasAgg(fig)  # gives the figure a renderer, used to measure the token boxes
    renderer = fig.canvas.get_renderer()
    grid = fig.add_gridspec(rows, 3, width_ratios=(1, 1, 2.6))
    cmap = colormaps["jet"]
    reds = colormaps["Reds"]
    for r, e in enumerate(explanations):
        face, overlay, words = (fig.add_subplot(grid[r, c]) for c in range(3))
        face.imshow(e.image)
        overlay.imshow(e.image)
        overlay.imshow(e.heatmap, cmap=cmap, alpha=0.5, vmin=0, vmax=1)
        for ax in (face, overlay):
            ax.set_xticks([])
            ax.set_yticks([])
        face.set_title("face", fontsize=8)
        overlay.set_title(f"{e.method}, s = {e.score:.2f}", fontsize=8)
        words.set_axis_off()
        content = e.token_relevance[~e.special]
        top = float(content.max()) if content.size and content.max() > 0 else 1.0
        x, y = 0.0, 0.75
        for token, value, special in zip(e.tokens, e.token_relevance, e.special, strict=True):
            shade = (0.85, 0.85, 0.85) if special else reds(0.1 + 0.8 * min(float(value) / top, 1.0))
            label = words.text(
                x,
                y,
                token,
                fontsize=9,
                transform=words.transAxes,
                va="center",
                bbox={"facecolor": shade, "edgecolor": "none", "pad": 2},
            )
            box = label.get_window_extent(renderer).transformed(words.transAxes.inverted())
            if box.x1 > 1.0 and x > 0.0:  # does not fit: start the next line with it
                x, y = 0.0, y - 0.25
                label.set_position((x, y))
                box = label.get_window_extent(renderer).transformed(words.transAxes.inverted())
            x = box.x1 + 0.015
        words.set_title(f'"{e.text}"', fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)
