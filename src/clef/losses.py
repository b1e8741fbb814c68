"""CLEF's contrastive losses: tensors in, a scalar out (docs/method.md §3 and §4).

The losses know nothing about models or data. Which frames meet in a batch is the sampler's business
(:mod:`clef.data.sampler`); which frames are positives is given by labels.

Conventions:
    * Embeddings need not be normalised: every loss L2-normalises them, so similarities are cosines
      (docs/method.md §2).
    * ``logit_scale`` is the *multiplier* of the cosines (CLIP's ``exp(log_scale)``, already clamped
      at 100 by the model) as a float or a 0-d tensor (learnable); a fixed temperature τ is
      ``logit_scale = 1 / τ``.

Distributed form (``gather_distributed=True``), as open_clip's "local loss": every rank gathers the
embeddings of all ranks *with gradient*, and computes the loss terms of **its own rows only** (its
anchors) against the global batch. A rank returns the mean over its own anchors. Why that is exact:

    Let the concatenated batch have N anchors split over W ranks, n = N / W each (every rank passes
    the same number of rows; the sampler guarantees it). The single-process loss is
    L = (1/N) Σ_i ℓ_i = (1/W) Σ_r L_r with L_r = (1/n) Σ_{i on r} ℓ_i, because each ℓ_i uses the
    same global denominators in both forms. DDP averages parameter gradients over ranks, so the update
    is ∇ of (1/W) Σ_r L_r = ∇L, provided rank s receives Σ_r ∂L_r/∂z_s for its rows z_s: that is what
    the gather's backward (an all-reduce sum) delivers. Hence each rank returns L_r (no extra factor);
    the logged loss is the all-reduce mean of L_r, which equals L.

Memory: the single-process form builds an N × N similarity matrix; the local form builds n × N per
rank: W times less, and at a fixed per-rank batch n it grows linearly (not quadratically) in the
global batch N (``benchmarks/loss_memory.py``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from clef.distributed import all_gather_no_grad, all_gather_with_grad, get_rank, get_world_size

__all__ = [
    "supcon_loss",
    "nt_xent_loss",
    "image_text_loss",
    "description_name_loss",
    "masked_bce_loss",
]


def _scale(logit_scale: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if isinstance(logit_scale, torch.Tensor):
        return logit_scale.to(like.dtype)
    return torch.tensor(float(logit_scale), dtype=like.dtype, device=like.device)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    # Logits reach 100 (CLIP's scale clamp); in bf16 their rounding error would be ~0.4, so the losses
    # compute in fp32 (fp64 inputs stay fp64) even when the towers run under bf16 autocast.
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _without_autocast(loss_fn):
    """Run a loss with autocast off on its inputs' device (the towers may run under bf16 autocast)."""

    @functools.wraps(loss_fn)
    def wrapper(first: torch.Tensor, *args, **kwargs):
        with torch.autocast(device_type=first.device.type, enabled=False):
            return loss_fn(first, *args, **kwargs)

    return wrapper


def _multi_positive_ce(logits: torch.Tensor, positives: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-row -mean_{p in positives} log softmax(logits)_p over the ``valid`` columns.

    Args:
        logits: (R, N).
        positives: (R, N) bool, a subset of ``valid``; every row must have at least one.
        valid: (R, N) bool, the columns of each row's denominator.

    Returns:
        (R,) losses.
    """
    logits = logits.masked_fill(~valid, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    # where() rather than multiplication: -inf * 0 would be NaN on the excluded columns.
    pos_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -pos_log_prob / positives.sum(dim=1)


def _view_contrast(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    scale: float | torch.Tensor,
    gather_distributed: bool,
) -> torch.Tensor:
    """Shared body of SupCon and NT-Xent: anchors = this rank's 2B views, against all 2N views."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if labels.shape != (z1.shape[0],):
        raise ValueError(f"labels must be (B,) = ({z1.shape[0]},); got {tuple(labels.shape)}")
    # Local views in the order [z1; z2]: row i and row i + B are the two views of frame i.
    local = F.normalize(_at_least_fp32(torch.cat([z1, z2], dim=0)), dim=-1)  # (2B, D)
    local_labels = torch.cat([labels, labels], dim=0)  # (2B,)
    if gather_distributed and get_world_size() > 1:
        views = all_gather_with_grad(local)  # (W * 2B, D), rank r's block at r * 2B
        view_labels = all_gather_no_grad(local_labels)
        offset = get_rank() * local.shape[0]
    else:
        views, view_labels, offset = local, local_labels, 0
    s = _scale(scale, local)
    rows = torch.arange(local.shape[0], device=local.device)

    # Denominator: logsumexp over every other view. The (2B, 2N) logits are the only matrix of that
    # size in the forward pass: the self entries are masked in place (the matmul's backward needs its
    # inputs, not its output), and no boolean positive mask is built (below).
    logits = (s * local) @ views.T  # (2B, 2N)
    logits[rows, rows + offset] = float("-inf")
    lse = torch.logsumexp(logits, dim=1)  # (2B,)

    # Positives: Σ_{p ∈ P(i)} s·v_i·v_p = s·v_i·(C[y_i] − v_i), with C[c] the sum of the views of class
    # c over the global batch; |P(i)| = count[y_i] − 1 ≥ 1 (i's own other view is always there).
    classes, inverse = torch.unique(view_labels, return_inverse=True)
    class_sum = torch.zeros(len(classes), views.shape[1], dtype=views.dtype, device=views.device)
    class_sum = class_sum.index_add(0, inverse, views)  # (U, D)
    count = torch.bincount(inverse, minlength=len(classes))  # (U,)
    mine = inverse[offset : offset + local.shape[0]]  # class index of each local anchor
    own = views[offset : offset + local.shape[0]]  # the anchors' rows as seen in the gathered batch
    pos_sum = s * (local * (class_sum[mine] - own)).sum(dim=1)  # (2B,)
    return (lse - pos_sum / (count[mine] - 1)).mean()


@_without_autocast
def supcon_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: float | torch.Tensor,
    gather_distributed: bool = False,
) -> torch.Tensor:
    """L_II′, the activity-supervised image–image contrastive loss (docs/method.md §3, "PI").

    SupCon form (Khosla et al. 2020, L_out): the batch holds 2B views (two augmentations of B frames).
    For each anchor view i, the positives P(i) are every *other* view with the same activity label,
    including i's own augmented view; the denominator A(i) is every other view:

        L = 1/(2B) Σ_i  -1/|P(i)| Σ_{p ∈ P(i)} log( exp(s·cos(v_i, v_p)) / Σ_{a ∈ A(i)} exp(s·cos(v_i, v_a)) )

    Args:
        z1, z2: (B, D) embeddings of the two views of each frame (row i of both = frame i).
        labels: (B,) integer activity labels.
        logit_scale: cosine multiplier s = 1/τ (float or 0-d tensor).
        gather_distributed: contrast against the global batch of all ranks (module docstring).

    Returns:
        0-d tensor. Closed form for perfectly aligned embeddings (every view of an activity equal,
        activities orthogonal, n frames per activity, B frames in all): log((2n-1)·e^s + 2(B-n)) - s.
    """
    return _view_contrast(z1, z2, labels, logit_scale, gather_distributed)


@_without_autocast
def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    gather_distributed: bool = False,
) -> torch.Tensor:
    """Instance-level SimCLR / NT-Xent baseline (docs/method.md §3: the loss the paper argues against).

    The only positive of a view is the other augmentation of the same frame; the denominator is every
    other view (2N - 1 terms). Equal to :func:`supcon_loss` with a distinct label per frame.

    Args:
        z1, z2: (B, D) embeddings of the two views.
        temperature: τ; similarities are cos / τ.
        gather_distributed: contrast against the global batch of all ranks.

    Returns:
        0-d tensor.
    """
    # Frame identity as the label; offset by rank so that labels are unique across the global batch.
    b = z1.shape[0]
    start = get_rank() * b if gather_distributed else 0
    ids = torch.arange(start, start + b, device=z1.device)
    return _view_contrast(z1, z2, ids, 1.0 / temperature, gather_distributed)


@_without_autocast
def image_text_loss(
    img_emb: torch.Tensor,
    text_emb: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: float | torch.Tensor,
    gather_distributed: bool = False,
) -> torch.Tensor:
    """L_IA, the image ↔ activity-text contrastive loss (docs/method.md §3, "PA").

    The text side is the dataset's K activity descriptions, not one caption per image.

    * image → text: cross-entropy of each image over the K texts, target its activity;
    * text → image: for each activity present in the (global) batch, -mean over its images of
      log softmax over all images of the batch (multiple positives);
    * L_IA = (L_i→t + L_t→i) / 2.

    Args:
        img_emb: (B, D) image embeddings.
        text_emb: (K, D) embeddings of the K activity texts (the same on every rank).
        labels: (B,) activity index of each image, in [0, K).
        logit_scale: cosine multiplier.
        gather_distributed: images of all ranks form the batch. Each rank computes image→text for its
            own images and the (cheap, K × N) text→image term in full; both average to the
            single-process value under DDP (module docstring).

    Returns:
        0-d tensor.
    """
    if img_emb.ndim != 2 or text_emb.ndim != 2 or img_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"need img_emb (B, D) and text_emb (K, D); got {tuple(img_emb.shape)}, {tuple(text_emb.shape)}"
        )
    if labels.shape != (img_emb.shape[0],):
        raise ValueError(f"labels must be (B,) = ({img_emb.shape[0]},); got {tuple(labels.shape)}")
    k = text_emb.shape[0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels must lie in [0, {k}); got range [{int(labels.min())}, {int(labels.max())}]")
    img = F.normalize(_at_least_fp32(img_emb), dim=-1)
    txt = F.normalize(_at_least_fp32(text_emb), dim=-1)
    s = _scale(logit_scale, img)
    loss_i2t = F.cross_entropy(s * img @ txt.T, labels)

    if gather_distributed and get_world_size() > 1:
        all_img = all_gather_with_grad(img)
        all_labels = all_gather_no_grad(labels)
    else:
        all_img, all_labels = img, labels
    logits_t2i = s * txt @ all_img.T  # (K, N)
    positives = all_labels[None, :] == torch.arange(k, device=labels.device)[:, None]  # (K, N)
    present = positives.any(dim=1)  # an activity with no image in the batch has no positive: skip it
    valid = torch.ones_like(positives)
    loss_t2i = _multi_positive_ce(logits_t2i[present], positives[present], valid[present]).mean()
    return 0.5 * (loss_i2t + loss_t2i)


@_without_autocast
def description_name_loss(
    desc_emb: torch.Tensor,
    name_emb: torch.Tensor,
    logit_scale: float | torch.Tensor,
) -> torch.Tensor:
    """L_DN, the description ↔ name text contrastive loss (docs/method.md §4; ours: symmetric InfoNCE).

    Row c of both inputs belongs to class c; the positive of description c is name c and vice versa,
    the other C - 1 classes are negatives. L_DN = (CE(desc → names) + CE(name → descs)) / 2.

    Args:
        desc_emb: (C, D) description embeddings (one sampled template per class).
        name_emb: (C, D) name embeddings.
        logit_scale: cosine multiplier.

    Returns:
        0-d tensor.
    """
    if desc_emb.shape != name_emb.shape or desc_emb.ndim != 2:
        raise ValueError(f"need two (C, D) tensors; got {tuple(desc_emb.shape)} and {tuple(name_emb.shape)}")
    d = F.normalize(_at_least_fp32(desc_emb), dim=-1)
    n = F.normalize(_at_least_fp32(name_emb), dim=-1)
    logits = _scale(logit_scale, d) * d @ n.T  # (C, C)
    target = torch.arange(d.shape[0], device=d.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@_without_autocast
def masked_bce_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-label AU loss of stage 2 (docs/method.md §4, ours): sigmoid + BCE over the coded labels only.

    ``L = Σ_{(i,j) coded} w_ij · BCE(logit_ij, y_ij) / #coded``, where ``w_ij = pos_weight_j`` for a
    positive label and 1 for a negative one (PyTorch's ``pos_weight`` convention). Labels that are not
    coded (BP4D's 9; ``mask`` False) contribute nothing, neither to the sum nor to the count: a
    masked label is unknown, never a negative.

    Args:
        logits: (B, J) pre-sigmoid scores.
        targets: (B, J) 0/1 (any value where masked).
        mask: (B, J) bool, True where the label is coded.
        pos_weight: optional (J,) weights of the positive class (e.g. #neg / #pos per AU).

    Returns:
        0-d tensor; 0 (still attached to ``logits``) when no label of the batch is coded.
    """
    if not logits.shape == targets.shape == mask.shape or logits.ndim != 2:
        raise ValueError(
            f"need (B, J) logits, targets and mask; got {tuple(logits.shape)}, "
            f"{tuple(targets.shape)}, {tuple(mask.shape)}"
        )
    logits = _at_least_fp32(logits)
    targets = torch.where(mask, targets.to(logits.dtype), torch.zeros_like(logits))
    weight = None if pos_weight is None else pos_weight.to(logits.dtype)
    per_label = F.binary_cross_entropy_with_logits(logits, targets, reduction="none", pos_weight=weight)
    mask_f = mask.to(logits.dtype)
    return (per_label * mask_f).sum() / mask_f.sum().clamp(min=1.0)
