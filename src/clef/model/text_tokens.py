"""The text towers' tokenizers as the callable :class:`clef.model.ClefModel` takes.

:class:`HFTokenizer` wraps a transformers tokenizer (MiniLM's WordPiece, CLIP's byte-level BPE):
calling it turns texts into ``{"input_ids", "attention_mask"}`` padded to the longest text, and
:meth:`HFTokenizer.token_strings` names the tokens of one id sequence, which is what a per-token
relevance figure (:mod:`clef.explain`) prints under each token.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

# CLIP's BPE marks a word's last piece with this suffix; it is dropped from displayed tokens.
_END_OF_WORD = "</w>"


class HFTokenizer:
    """``list[str] -> {"input_ids", "attention_mask"}`` (N, L), L = the longest text, at most ``max_length``
    (longer texts are cut; the tokenizer keeps its end token)."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    def __call__(self, texts: list[str]) -> dict[str, Tensor]:
        out = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of the tokenizer's own markers (start, end, padding), which carry no word of the text."""
        return frozenset(int(i) for i in self.tokenizer.all_special_ids)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """The readable form of each token id (special tokens included, e.g. ``[CLS]``)."""
        tokens = self.tokenizer.convert_ids_to_tokens([int(i) for i in ids])
        return [t.removesuffix(_END_OF_WORD) for t in tokens]
