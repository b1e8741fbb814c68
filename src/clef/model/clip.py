"""The paper's backbone: CLIP ViT-B/16 on transformers' ``CLIPModel`` (no torchvision).

Weights (``ClipConfig.weights``) may be

- a Hugging Face format folder (``config.json`` + weights), e.g. ``openai/clip-vit-base-patch16`` saved
  locally;
- an OpenAI-layout state dict file (``.pt``/``.pth``), bare or wrapped as ``{"state_dict": ...}`` like
  FaRL's releases; it is read with ``torch.load(..., weights_only=True)`` and converted to the Hugging
  Face layout by :func:`convert_openai_state_dict`. TorchScript archives (OpenAI's own ``ViT-B-16.pt``)
  are refused: loading them runs serialised code;
- a hub id (needs network access);
- ``None``: random weights with the sizes in the config (tests, or a checkpoint about to be loaded).

Tokenizer: ``ClipConfig.tokenizer`` if given (folder or hub id), else the weights folder when it
holds tokenizer files, else built from OpenAI's BPE vocabulary ``bpe_simple_vocab_16e6.txt.gz``
(:mod:`clef.model.clip_tokenizer`). Every CLIP release (OpenAI, FaRL, LAION) uses that vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from clef.errors import UserError
from clef.model.hf_attention import recorded_attention
from clef.model.hf_logging import quiet_transformers
from clef.model.model import ClefModel, Preprocess, Tower

# OpenAI CLIP's normalisation (FaRL uses the same).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipConfig:
    """CLIP backbone. Defaults are ViT-B/16 (224 px, patch 16, 12×768 vision, 12×512 text, D = 512).

    When ``weights`` is set the sizes are taken from the weights and the stored config is updated to
    match, so a checkpoint always rebuilds the architecture it holds.
    """

    weights: str | None = None
    tokenizer: str | None = None
    bpe_vocab: str | None = None
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_intermediate: int = 3072
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_intermediate: int = 2048
    context_length: int = 77
    vocab_size: int = 49408
    embed_dim: int = 512
    hidden_act: str = "quick_gelu"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise UserError(
                f"clip image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        for width, heads, what in (
            (self.vision_width, self.vision_heads, "vision"),
            (self.text_width, self.text_heads, "text"),
        ):
            if width % heads:
                raise UserError(f"clip {what}_width {width} is not divisible by {what}_heads {heads}")


def hf_config(cfg: ClipConfig):
    """The transformers ``CLIPConfig`` for the sizes in ``cfg``."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.text_width,
            intermediate_size=cfg.text_intermediate,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=cfg.context_length,
            hidden_act=cfg.hidden_act,
            projection_dim=cfg.embed_dim,
        ),
        vision_config=dict(
            hidden_size=cfg.vision_width,
            intermediate_size=cfg.vision_intermediate,
            num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.vision_heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            hidden_act=cfg.hidden_act,
            projection_dim=cfg.embed_dim,
        ),
        projection_dim=cfg.embed_dim,
    )


def _sizes_from_hf(cfg: ClipConfig, hf) -> ClipConfig:
    t, v = hf.text_config, hf.vision_config
    if t.hidden_act != v.hidden_act:
        raise UserError(
            f"CLIP weights use different activations in the towers ({t.hidden_act}, {v.hidden_act})"
        )
    return replace(
        cfg,
        image_size=v.image_size,
        patch_size=v.patch_size,
        vision_width=v.hidden_size,
        vision_layers=v.num_hidden_layers,
        vision_heads=v.num_attention_heads,
        vision_intermediate=v.intermediate_size,
        text_width=t.hidden_size,
        text_layers=t.num_hidden_layers,
        text_heads=t.num_attention_heads,
        text_intermediate=t.intermediate_size,
        context_length=t.max_position_embeddings,
        vocab_size=t.vocab_size,
        embed_dim=hf.projection_dim,
        hidden_act=v.hidden_act,
    )


class ClipImageTower(Tower):
    """transformers' CLIP vision transformer (pooled class token, post-LayerNorm) + visual projection."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Linear) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection
        self.embed_dim = visual_projection.out_features

    has_attention = True

    def forward(self, images: Tensor) -> Tensor:
        return self.visual_projection(self.vision_model(pixel_values=images).pooler_output)

    def attention_forward(self, images: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """See :meth:`Tower.attention_forward`; L = 1 + patches, pooled at the class token (index 0)."""
        attention_modules = [layer.self_attn for layer in self.blocks()]
        with recorded_attention(self.vision_model.config, attention_modules) as attentions:
            out = self.forward(images)
        pooling = out.new_zeros(out.shape[0], attentions[0].shape[-1])
        pooling[:, 0] = 1.0
        return out, list(attentions), pooling

    def blocks(self) -> list[nn.Module]:
        return list(self.vision_model.encoder.layers)

    def head(self) -> list[nn.Module]:
        return [self.vision_model.post_layernorm, self.visual_projection]

    def projection_parameters(self) -> list[nn.Parameter]:
        return list(self.visual_projection.parameters())


class ClipTextTower(Tower):
    """transformers' CLIP text transformer (causal; pooled at the end-of-text token) + text projection."""

    def __init__(self, text_model: nn.Module, text_projection: nn.Linear) -> None:
        super().__init__()
        self.text_model = text_model
        self.text_projection = text_projection
        self.embed_dim = text_projection.out_features

    has_attention = True

    def forward(self, tokens: dict[str, Tensor]) -> Tensor:
        out = self.text_model(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))
        return self.text_projection(out.pooler_output)

    def attention_forward(self, tokens: dict[str, Tensor]) -> tuple[Tensor, list[Tensor], Tensor]:
        """See :meth:`Tower.attention_forward`; pooled at the end-of-text token."""
        attention_modules = [layer.self_attn for layer in self.blocks()]
        with recorded_attention(self.text_model.config, attention_modules) as attentions:
            out = self.forward(tokens)
        ids = tokens["input_ids"].to(out.device)
        # The position transformers' CLIPTextTransformer pools at: the first end-of-text token, or the
        # largest id for configs from before it had a correct eos_token_id (2), as in that class.
        eos = self.text_model.config.eos_token_id
        position = ids.argmax(dim=-1) if eos == 2 else (ids == eos).int().argmax(dim=-1)
        pooling = out.new_zeros(ids.shape)
        pooling[torch.arange(ids.shape[0], device=out.device), position] = 1.0
        return out, list(attentions), pooling

    def blocks(self) -> list[nn.Module]:
        return list(self.text_model.encoder.layers)

    def head(self) -> list[nn.Module]:
        return [self.text_model.final_layer_norm, self.text_projection]

    def projection_parameters(self) -> list[nn.Parameter]:
        return list(self.text_projection.parameters())


# --- OpenAI layout -> Hugging Face layout ------------------------------------------------------------

_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_PARTS = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
_PLAIN = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "logit_scale": "logit_scale",
}
# Bookkeeping entries of OpenAI's archives that are not weights.
_IGNORED = {"input_resolution", "context_length", "vocab_size"}


def convert_openai_state_dict(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """OpenAI CLIP state dict -> (transformers ``CLIPModel`` state dict, keys that were not recognised).

    The fused attention input projection ``in_proj_{weight,bias}`` (3W, W) is split into q, k, v; the
    two projections are matrices applied as ``x @ P`` in OpenAI's code and become ``nn.Linear``
    weights ``P.T``. Values are not copied where no reshaping is needed.
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key in _IGNORED:
            continue
        if key in _PLAIN:
            out[_PLAIN[key]] = value
            continue
        if key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
            continue
        if key == "visual.proj":
            out["visual_projection.weight"] = value.t().contiguous()
            continue
        match = _BLOCK.match(key)
        if match is None:
            unknown.append(key)
            continue
        tower = "vision_model" if match.group(1) else "text_model"
        prefix = f"{tower}.encoder.layers.{match.group(2)}."
        rest = match.group(3)
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]  # weight | bias
            q, k, v = value.chunk(3, dim=0)
            for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[f"{prefix}self_attn.{name}.{kind}"] = part.contiguous()
            continue
        module, _, leaf = rest.rpartition(".")
        if module in _BLOCK_PARTS:
            out[f"{prefix}{_BLOCK_PARTS[module]}.{leaf}"] = value
        else:
            unknown.append(key)
    return out, unknown


def config_from_openai_state_dict(state: dict[str, Tensor], base: ClipConfig) -> ClipConfig:
    """Read the architecture from the tensor shapes of an OpenAI-layout state dict (as OpenAI's
    ``build_model`` does; heads = width / 64)."""
    try:
        conv = state["visual.conv1.weight"]  # (Wv, 3, P, P)
        vision_width, patch = conv.shape[0], conv.shape[-1]
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        text_width = state["ln_final.weight"].shape[0]
        vision_layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
        text_layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
        return replace(
            base,
            image_size=patch * grid,
            patch_size=patch,
            vision_width=vision_width,
            vision_layers=vision_layers,
            vision_heads=vision_width // 64,
            vision_intermediate=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            text_width=text_width,
            text_layers=text_layers,
            text_heads=text_width // 64,
            text_intermediate=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            context_length=state["positional_embedding"].shape[0],
            vocab_size=state["token_embedding.weight"].shape[0],
            embed_dim=state["text_projection"].shape[1],
        )
    except KeyError as err:
        raise UserError(f"not an OpenAI CLIP state dict: key {err} is missing") from None


def read_openai_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of an OpenAI/FaRL ``.pt`` file, read without unpickling code (``weights_only=True``)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types; the message is what matters
        raise UserError(
            f"{path}: cannot read as a plain state dict with torch.load(weights_only=True) ({err}). "
            "TorchScript archives such as OpenAI's ViT-B-16.pt are not loaded; use the Hugging Face "
            "format (openai/clip-vit-base-patch16) or a state dict saved with torch.save(model.state_dict())"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # FaRL wraps its weights this way
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a dict of tensors (or {{'state_dict': ...}})")
    # Strip a DistributedDataParallel prefix if every key has it.
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_openai_into(model: nn.Module, state: dict[str, Tensor], source: str) -> list[str]:
    """Convert ``state`` and load it into a transformers ``CLIPModel`` with strict key matching.

    Returns the OpenAI keys that were ignored (e.g. extra heads in a FaRL file). A missing or
    wrongly shaped weight raises :class:`UserError` naming it.
    """
    converted, unknown = convert_openai_state_dict(state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in converted]
    if missing:
        raise UserError(f"{source}: the state dict lacks {len(missing)} CLIP weights, e.g. {missing[:3]}")
    extra = [k for k in converted if k not in expected]
    if extra:
        raise UserError(f"{source}: unexpected weights after conversion, e.g. {extra[:3]}")
    for key, value in converted.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise UserError(
                f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
    model.load_state_dict(converted, strict=True)
    return unknown


def load_clip_weights(cfg: ClipConfig):
    """Build a transformers ``CLIPModel`` from ``cfg.weights`` -> (model, cfg with the loaded sizes)."""
    from transformers import CLIPModel

    source = cfg.weights
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_hf(CLIPModel, str(path), cfg)
    if path.is_file():
        state = read_openai_state_dict(path)
        cfg = config_from_openai_state_dict(state, cfg)
        model = CLIPModel(hf_config(cfg))
        unknown = load_openai_into(model, state, str(path))
        if unknown:
            import warnings

            warnings.warn(
                f"{path}: ignored {len(unknown)} non-CLIP entries, e.g. {unknown[:3]}", stacklevel=2
            )
        return model, cfg
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        return _from_hf(CLIPModel, source, cfg)
    raise UserError(f"CLIP weights {source!r}: no such file or folder, and not a hub id (owner/name)")


def _from_hf(cls, source: str, cfg: ClipConfig):
    try:
        with quiet_transformers():
            model = cls.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load CLIP weights from {source!r}: {err}") from None
    return model, _sizes_from_hf(cfg, model.config)


def build_clip_model(cfg: ClipConfig, pretrained: bool = True) -> ClefModel:
    """A :class:`ClefModel` on CLIP. ``pretrained=False`` ignores ``cfg.weights`` (architecture only)."""
    from transformers import CLIPModel

    from clef.model.clip_tokenizer import clip_tokenizer

    if pretrained and cfg.weights is not None:
        hf, cfg = load_clip_weights(cfg)
    else:
        hf = CLIPModel(hf_config(cfg))
    model = ClefModel(
        image_tower=ClipImageTower(hf.vision_model, hf.visual_projection),
        text_tower=ClipTextTower(hf.text_model, hf.text_projection),
        tokenizer=clip_tokenizer(cfg),
        preprocess=Preprocess(cfg.image_size, tuple(cfg.mean), tuple(cfg.std)),
        backbone="clip-vit-b16",
        backbone_config=cfg,
        init_logit_scale=float(hf.logit_scale.detach()),
    )
    return model


__all__ = [
    "ClipConfig",
    "ClipImageTower",
    "ClipTextTower",
    "build_clip_model",
    "convert_openai_state_dict",
    "config_from_openai_state_dict",
    "hf_config",
    "load_clip_weights",
    "read_openai_state_dict",
]
