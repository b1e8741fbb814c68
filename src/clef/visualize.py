"""The paper's visualisations of what a model learned (docs/method.md §7): t-SNE maps of image
embeddings, coloured by a label (expression, activity, subject)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_tsne"]


def plot_tsne(
    panels: Sequence[tuple[str, np.ndarray]],
    labels: np.ndarray,
    path: Path,
    seed: int = 0,
    title: str = "t-SNE of image embeddings",
    order: Sequence[str] | None = None,
) -> Path:
    """One t-SNE panel per ``(title, embeddings (N, D))``, points coloured by ``labels`` (N,).

    ``order``: the label values in legend order (default: canonical expressions first, then the
    other values sorted). Perplexity is min(30, (N - 1) / 3), so small sets work too.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    from clef.labels import EXPRESSIONS

    labels = np.asarray(labels).astype(str)
    present = set(labels)
    if order is None:
        order = [e for e in EXPRESSIONS if e in present] + sorted(present - set(EXPRESSIONS))
    classes = [c for c in order if c in present]
    # Matplotlib's 10-colour cycle repeats after ten classes (subjects!); tab20 keeps 20 apart.
    palette = [f"C{k}" for k in range(10)] if len(classes) <= 10 else list(colormaps["tab20"].colors)
    colours = {c: palette[k % len(palette)] for k, c in enumerate(classes)}
    fig = Figure(figsize=(4.2 * len(panels), 4.4))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (panel_title, emb) in zip(axes, panels, strict=True):
        perplexity = float(min(30, max(2, (len(emb) - 1) // 3)))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb)
        for c in classes:
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=colours[c], label=c, alpha=0.8)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes) <= 20:  # a legend of more entries hides the map
        axes[-1].legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
