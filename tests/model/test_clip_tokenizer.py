"""The CLIP tokenizer built from OpenAI's BPE file gives OpenAI's token ids."""

from __future__ import annotations

import gzip
import html
import importlib.metadata
import importlib.util
import sys
import types
from functools import cache

import pytest
import regex

from clef.errors import UserError
from clef.model.clip import ClipConfig
from clef.model.clip_tokenizer import clip_tokenizer, find_bpe_vocab

STRINGS = [
    "a photo of a person with happiness.",
    "The inner ends of the eyebrows pulled UPWARD, with short wrinkles!",
    "Hello   World!! don't won't they'll I'm we've",
    "café naïve 12,345 ok? <tag> e-mail@x.org",
    "   ",
    "emoji 😀 and ümlauts",
]


class ReferenceBPE:
    """OpenAI CLIP's tokenizer algorithm as published (simple_tokenizer.py), written for this test.

    Text cleaning: html unescape, whitespace collapsing, lower case (ftfy's mojibake repair is not
    needed for these strings). Words come from CLIP's regex; each word's UTF-8 bytes are mapped to
    printable characters, the last one gets '</w>', then merges are applied by rank.
    """

    PATTERN = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )

    def __init__(self, path):
        lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")[1 : 49152 - 256 - 2 + 1]
        merges = [tuple(line.split()) for line in lines]
        bs = (
            list(range(ord("!"), ord("~") + 1))
            + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1))
        )
        cs, n = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_encoder = dict(zip(bs, [chr(c) for c in cs], strict=True))
        vocab = list(self.byte_encoder.values())
        vocab = (
            vocab
            + [v + "</w>" for v in vocab]
            + ["".join(m) for m in merges]
            + ["<|startoftext|>", "<|endoftext|>"]
        )
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}

    @cache  # noqa: B019 - test-only object
    def bpe(self, token: str) -> list[str]:
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:], strict=False)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(self, text: str) -> list[int]:
        text = " ".join(html.unescape(html.unescape(text)).split()).strip().lower()
        ids = []
        for token in self.PATTERN.findall(text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids += [self.encoder[t] for t in self.bpe(token)]
        return [49406, *ids, 49407]


@pytest.fixture(scope="module")
def tokenize():
    return clip_tokenizer(ClipConfig())


def _ids(tokens, i):
    mask = tokens["attention_mask"][i].bool()
    return tokens["input_ids"][i][mask].tolist()


def test_ids_match_a_reference_written_from_the_published_algorithm(tokenize):
    reference = ReferenceBPE(find_bpe_vocab())
    tokens = tokenize(STRINGS)
    for i, text in enumerate(STRINGS):
        assert _ids(tokens, i) == reference.encode(text), text


def test_ids_match_openais_own_simple_tokenizer_from_the_installed_wheel(tokenize, monkeypatch):
    """Runs clip-anytorch's clip/simple_tokenizer.py (OpenAI's file) without importing its package
    (which would import torchvision); ftfy is replaced by the identity (ASCII-safe strings here)."""
    try:
        dist = importlib.metadata.distribution("clip-anytorch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("clip-anytorch is not installed (pip install --no-deps clip-anytorch)")
    source = dist.locate_file("clip/simple_tokenizer.py")
    monkeypatch.setitem(sys.modules, "ftfy", types.SimpleNamespace(fix_text=lambda s: s))
    spec = importlib.util.spec_from_file_location("openai_simple_tokenizer", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    openai = module.SimpleTokenizer(bpe_path=str(find_bpe_vocab()))
    tokens = tokenize(STRINGS)
    for i, text in enumerate(STRINGS):
        assert _ids(tokens, i) == [49406, *openai.encode(text), 49407], text


def test_long_texts_are_cut_to_the_context_and_keep_end_of_text(tokenize):
    tokens = tokenize(["word " * 200, "short"])
    assert tokens["input_ids"].shape == (2, 77)
    assert tokens["input_ids"][0, -1].item() == 49407 and tokens["input_ids"][0, 0].item() == 49406
    assert tokens["attention_mask"][1].sum().item() == 3


def test_missing_vocabulary_file_names_the_path(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        find_bpe_vocab(tmp_path / "nope.txt.gz")
