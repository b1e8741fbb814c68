"""Greedy non-maximum suppression in plain torch (no torchvision).

Boxes are ``(N, 4)`` tensors ``[x1, y1, x2, y2]`` in continuous pixel coordinates (area =
``(x2 - x1) * (y2 - y1)``, as in torchvision). Two overlap measures are offered because MTCNN's last
stage uses the second: ``"union"`` (intersection over union) and ``"min"`` (intersection over the
smaller box, which also removes a small box sitting inside a large one).
"""

from __future__ import annotations

import torch

OVERLAP_MODES = ("union", "min")


def box_overlap(box: torch.Tensor, others: torch.Tensor, mode: str = "union") -> torch.Tensor:
    """Overlap of one box ``(4,)`` with each of ``others`` ``(M, 4)``; returns ``(M,)``."""
    if mode not in OVERLAP_MODES:
        raise ValueError(f"unknown overlap mode {mode!r}; valid: {', '.join(OVERLAP_MODES)}")
    w = (torch.minimum(box[2], others[:, 2]) - torch.maximum(box[0], others[:, 0])).clamp(min=0)
    h = (torch.minimum(box[3], others[:, 3]) - torch.maximum(box[1], others[:, 1])).clamp(min=0)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    if mode == "union":
        denom = area + areas - inter
    else:
        denom = torch.minimum(area.expand_as(areas), areas)
    # A degenerate (zero-area) pair overlaps by 0, not NaN.
    return torch.where(denom > 0, inter / denom.clamp(min=torch.finfo(inter.dtype).tiny), 0.0)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS, highest score first.

    A box is dropped when its overlap with an already kept, higher-scoring box is ``> threshold``.
    Equal scores keep the lower index first. Returns a ``(K,)`` int64 tensor on ``boxes.device``.
    The loop runs once per *kept* box (each step is vectorised over the remaining ones), which is
    cheap for detection, where few boxes survive.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    boxes = boxes.float()
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        if rest.numel() == 0:
            break
        order = rest[box_overlap(boxes[i], boxes[rest], mode) <= threshold]
    return torch.stack(keep)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float, mode: str = "union"
) -> torch.Tensor:
    """NMS run independently within each group (e.g. each image of a batch).

    ``groups`` is an ``(N,)`` integer tensor. Returns the kept indices of all groups, group by group
    in increasing group id, highest score first within a group.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    kept = []
    for g in torch.unique(groups):
        members = torch.nonzero(groups == g).squeeze(1)
        kept.append(members[nms(boxes[members], scores[members], threshold, mode)])
    return torch.cat(kept)
