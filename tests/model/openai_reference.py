"""A tiny CLIP in OpenAI's layout (module and key names of openai/CLIP's model.py), written for the
tests from the published architecture: it is the forward reference for the weight conversion."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mask: torch.Tensor | None = None):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)  # in_proj_weight (3W, W), out_proj
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, 4 * width)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(4 * width, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width)
        self.mask = mask

    def forward(self, x):  # (L, B, W), sequence first as in OpenAI's code
        mask = None if self.mask is None else self.mask[: x.shape[0], : x.shape[0]]
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, resolution: int, patch: int, width: int, layers: int, heads: int, out_dim: int):
        super().__init__()
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((resolution // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, out_dim))

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)  # (B, N, W)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


class OpenAICLIP(nn.Module):
    def __init__(self, embed_dim, resolution, patch, v_width, v_layers, context, vocab, t_width, t_layers):
        super().__init__()
        self.visual = VisionTransformer(resolution, patch, v_width, v_layers, v_width // 64 or 1, embed_dim)
        mask = torch.full((context, context), float("-inf")).triu_(1)  # causal
        self.transformer = Transformer(t_width, t_layers, t_width // 64 or 1, mask)
        self.token_embedding = nn.Embedding(vocab, t_width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(context, t_width))
        self.ln_final = nn.LayerNorm(t_width)
        self.text_projection = nn.Parameter(t_width**-0.5 * torch.randn(t_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.5))
        # Random LayerNorm affine parameters, so that a swapped norm would show in the outputs.
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.normal_(m.weight, 1.0, 0.2)
                nn.init.normal_(m.bias, 0.0, 0.2)

    def encode_image(self, images):
        return self.visual(images)

    def encode_text(self, ids):  # (N, L); the end-of-text token has the largest id
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        x = self.ln_final(self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2))
        return x[torch.arange(ids.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


def openai_vit_b16_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of OpenAI's ViT-B/16 state dict (as released; 'input_resolution' etc. excluded)."""
    shapes: dict[str, tuple[int, ...]] = {
        "positional_embedding": (77, 512),
        "text_projection": (512, 512),
        "logit_scale": (),
        "token_embedding.weight": (49408, 512),
        "ln_final.weight": (512,),
        "ln_final.bias": (512,),
        "visual.class_embedding": (768,),
        "visual.positional_embedding": (197, 768),
        "visual.proj": (768, 512),
        "visual.conv1.weight": (768, 3, 16, 16),
        "visual.ln_pre.weight": (768,),
        "visual.ln_pre.bias": (768,),
        "visual.ln_post.weight": (768,),
        "visual.ln_post.bias": (768,),
    }
    for prefix, width in (("visual.transformer", 768), ("transformer", 512)):
        for i in range(12):
            b = f"{prefix}.resblocks.{i}."
            shapes.update(
                {
                    b + "attn.in_proj_weight": (3 * width, width),
                    b + "attn.in_proj_bias": (3 * width,),
                    b + "attn.out_proj.weight": (width, width),
                    b + "attn.out_proj.bias": (width,),
                    b + "ln_1.weight": (width,),
                    b + "ln_1.bias": (width,),
                    b + "mlp.c_fc.weight": (4 * width, width),
                    b + "mlp.c_fc.bias": (4 * width,),
                    b + "mlp.c_proj.weight": (width, 4 * width),
                    b + "mlp.c_proj.bias": (width,),
                    b + "ln_2.weight": (width,),
                    b + "ln_2.bias": (width,),
                }
            )
    return shapes
