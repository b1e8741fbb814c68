"""Attention probabilities of transformers' encoder layers, recorded during one forward pass.

The towers built on transformers (CLIP's two towers, MiniLM) run the library's fused attention
(SDPA), which never forms the probability matrix. :func:`recorded_attention` switches their config
to the library's eager attention for the duration of a ``with`` block and records, through forward
hooks, the probabilities each self-attention module returns: (B, heads, L, L), rows = queries, the
very tensors the layer multiplies into the values, so gradients with respect to them are defined.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

EAGER = "eager"


@contextmanager
def recorded_attention(config, modules: Sequence[nn.Module]) -> Iterator[list[Tensor]]:
    """Inside the block, ``modules`` (self-attention modules whose forward returns ``(output,
    probabilities)``, all reading ``config``) run eager attention; the yielded list fills with their
    probabilities in call order. ``config``'s attention implementation is restored on exit."""
    previous = config._attn_implementation
    recorded: list[Tensor] = []

    def keep(module, args, output) -> None:
        if output[1] is None:  # cannot happen under eager attention; a silent None would give zero maps
            raise RuntimeError(f"{type(module).__name__} returned no attention probabilities")
        recorded.append(output[1])

    handles = [m.register_forward_hook(keep) for m in modules]
    config._attn_implementation = EAGER
    try:
        yield recorded
    finally:
        config._attn_implementation = previous
        for handle in handles:
            handle.remove()
