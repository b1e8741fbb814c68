"""Image towers trained from scratch for the offline backbone: a small ViT and a small residual CNN.

Both are sized by configuration (:class:`clef.model.backbones.OfflineConfig`) for CPU work at
64×64 pixels; both end in a linear projection to the shared embedding space.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clef.model.model import Tower


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # each (B, heads, L, W/heads)
        b, n, w = x.shape
        return self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, W) -> (B, L, W)
        q, k, v = self._qkv(x)
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, heads, L, W/heads)
        return self.proj(out.transpose(1, 2).flatten(2))

    def forward_with_probabilities(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """As :meth:`forward` (same result up to rounding), with the probabilities (B, heads, L, L) it
        formed; SDPA's fused kernel never forms them, so this path spells the attention out."""
        q, k, v = self._qkv(x)
        probabilities = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
        return self.proj((probabilities @ v).transpose(1, 2).flatten(2)), probabilities


class _ViTBlock(nn.Module):
    """Pre-norm transformer block (attention + MLP, each with a residual)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_with_probabilities(self, x: Tensor) -> tuple[Tensor, Tensor]:
        attended, probabilities = self.attn.forward_with_probabilities(self.norm1(x))
        x = x + attended
        return x + self.mlp(self.norm2(x)), probabilities


class SmallViT(Tower):
    """ViT with a class token: patchify -> ``depth`` blocks -> LayerNorm -> class token -> projection.

    Input (B, 3, S, S) with S divisible by ``patch_size``; output (B, embed_dim).
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        embed_dim: int,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        n_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, width))
        self.layers = nn.ModuleList(_ViTBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_linear)

    has_attention = True

    def _tokens(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, W)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed

    def forward(self, images: Tensor) -> Tensor:
        x = self._tokens(images)
        for layer in self.layers:
            x = layer(x)
        return self.projection(self.norm(x[:, 0]))

    def attention_forward(self, images: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """See :meth:`Tower.attention_forward`; L = 1 + patches, pooled at the class token (index 0)."""
        x = self._tokens(images)
        attentions = []
        for layer in self.layers:
            x, probabilities = layer.forward_with_probabilities(x)
            attentions.append(probabilities)
        out = self.projection(self.norm(x[:, 0]))
        pooling = out.new_zeros(x.shape[0], x.shape[1])
        pooling[:, 0] = 1.0
        return out, attentions, pooling

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def head(self) -> list[nn.Module]:
        return [self.norm, self.projection]

    def projection_parameters(self) -> list[nn.Parameter]:
        return list(self.projection.parameters())


def _init_linear(module: nn.Module) -> None:
    # ViT practice: small truncated-normal weights and zero biases for linear layers.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _group_norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: contrastive batches are small and activity-balanced, and batch
    # statistics would let samples in a batch see each other and differ between train and eval.
    return nn.GroupNorm(min(8, channels // 4) or 1, channels)


class _ResBlock(nn.Module):
    """Basic residual block: two 3×3 convolutions; a strided 1×1 shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            _group_norm(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            _group_norm(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _group_norm(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SmallCNN(Tower):
    """Residual CNN: 3×3 stem -> one stage per entry of ``widths`` (each halves the resolution,
    ``depth`` blocks) -> global average pool -> LayerNorm -> projection.

    Input (B, 3, S, S); output (B, embed_dim). The blocks used for locking are the stages.

    ``chunk``: on CPU, a batch of more than ``chunk`` images runs through the network ``chunk``
    images at a time (0: all at once). Every layer works per image (GroupNorm, not BatchNorm), so
    the outputs and gradients are the same up to float rounding; what changes is that one chunk's
    activations (32 images × 32 channels × 64² floats = 16 MiB at the stem) stay in the CPU cache
    instead of streaming a whole batch's through memory at every layer, which made the stage-1
    training step ~1.3x faster on this machine (benchmarks/stage1_speed.py). Not applied on GPUs,
    where one large call is what keeps the device busy.
    """

    def __init__(self, widths: tuple[int, ...], depth: int, embed_dim: int, chunk: int = 0) -> None:
        super().__init__()
        if chunk < 0:
            raise ValueError(f"chunk must be >= 0, got {chunk}")
        self.embed_dim = embed_dim
        self.chunk = chunk
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False), _group_norm(widths[0]), nn.ReLU(inplace=True)
        )
        stages = []
        c_in = widths[0]
        for c_out in widths:
            blocks = [_ResBlock(c_in, c_out, stride=2)]
            blocks += [_ResBlock(c_out, c_out, stride=1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(widths[-1])
        self.projection = nn.Linear(widths[-1], embed_dim, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        if self.chunk and images.device.type == "cpu" and images.shape[0] > self.chunk:
            return torch.cat([self._forward(part) for part in images.split(self.chunk)])
        return self._forward(images)

    def _forward(self, images: Tensor) -> Tensor:
        x = self.stem(images)
        for stage in self.stages:
            x = stage(x)
        return self.projection(self.norm(x.mean(dim=(2, 3))))

    def blocks(self) -> list[nn.Module]:
        return list(self.stages)

    def head(self) -> list[nn.Module]:
        return [self.norm, self.projection]

    def projection_parameters(self) -> list[nn.Parameter]:
        return list(self.projection.parameters())
