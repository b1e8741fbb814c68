"""Per-record sampling weights for imbalanced training sets (AffectNet's training split)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def class_balanced_weights(records: pd.DataFrame, column: str = "expression") -> np.ndarray:
    """Weights (N,) float64 that make every class of ``column`` equally likely when sampled.

    Each record gets ``1 / (K * n_c)`` for its class c with ``n_c`` records, K classes present, so the
    weights sum to 1 and each class's weights sum to 1/K. Records with NA in ``column`` get 0. Pass
    them to e.g. ``torch.utils.data.WeightedRandomSampler(weights, num_samples, replacement=True)``.
    """
    labels = records[column]
    counts = labels.value_counts(dropna=True)
    if counts.empty:
        raise ValueError(f"no record has a {column!r}")
    per_record = labels.map(lambda c: np.nan if pd.isna(c) else 1.0 / (len(counts) * counts[c]))
    return per_record.fillna(0.0).to_numpy(dtype=np.float64)
