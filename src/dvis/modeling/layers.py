"""Transformer building blocks shared by the referring tracker and the temporal refiner.

All layers are post-norm with dropout 0 and no positional embeddings (as in the released code). Tensors
are batch-first: ``(batch, length, channels)``. Parameter names follow the released DVIS code
(``self_attn.in_proj_weight``, ``multihead_attn.out_proj.weight``, ``linear1``, ``norm`` ...) so
released state dicts load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiheadAttention(nn.Module):
    """Multi-head attention with one packed (q, k, v) input projection.

    Stores its weights like ``torch.nn.MultiheadAttention`` (``in_proj_weight`` (3C, C),
    ``in_proj_bias`` (3C,), ``out_proj``) but runs batch-first through
    ``scaled_dot_product_attention`` and projects keys and values once when they are the same
    tensor.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape  # (N, L, C) -> (N, heads, L, C / heads)
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, query: Tensor, memory: Tensor) -> Tensor:
        """query (N, Lq, C), memory (N, Lk, C) used as keys and values -> (N, Lq, C)."""
        dim = self.dim
        if query is memory:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q = F.linear(query, self.in_proj_weight[:dim], self.in_proj_bias[:dim])
            k, v = F.linear(memory, self.in_proj_weight[dim:], self.in_proj_bias[dim:]).chunk(2, dim=-1)
        attended = F.scaled_dot_product_attention(
            self._split_heads(q), self._split_heads(k), self._split_heads(v)
        )  # (N, heads, Lq, C / heads)
        attended = attended.transpose(1, 2).reshape(query.shape)
        return self.out_proj(attended)


class SelfAttentionLayer(nn.Module):
    """``x = LN(x + MHA(x, x, x))``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.self_attn(x, x))


class ReferringCrossAttentionLayer(nn.Module):
    """Referring cross-attention: ``LN(identification + MHA(q=query, k=v=memory))``.

    With ``identification is query`` it is the standard cross-attention layer.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.multihead_attn = MultiheadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, identification: Tensor, query: Tensor, memory: Tensor) -> Tensor:
        return self.norm(identification + self.multihead_attn(query, memory))


class CrossAttentionLayer(ReferringCrossAttentionLayer):
    """``x = LN(x + MHA(q=x, k=v=memory))``."""

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x, x, memory)


class FFNLayer(nn.Module):
    """``x = LN(x + W2 relu(W1 x))``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (the mask-embedding head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


def xavier_init_matrices(*modules: nn.Module) -> None:
    """Xavier-uniform initialise every parameter with more than one dimension (release init)."""
    for module in modules:
        for parameter in module.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)


def prediction_heads(dim: int, num_classes: int, mask_dim: int) -> tuple[nn.LayerNorm, nn.Linear, MLP]:
    """The tracker's and refiner's heads, in the release's creation order: ``decoder_norm`` (C),
    ``class_embed`` (C -> K+1, the last column no-object) and ``mask_embed`` (3-layer MLP, C -> C_mask)."""
    return nn.LayerNorm(dim), nn.Linear(dim, num_classes + 1), MLP(dim, dim, mask_dim, 3)


def mask_logits(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
    """Per-frame dot product of query mask embeddings with pixel embeddings.

    mask_embed (B, T, Q, C), mask_features (B, T, C, H, W) -> mask logits (B, T, Q, H, W).
    """
    batch, frames, queries, channels = mask_embed.shape
    height, width = mask_features.shape[-2:]
    flat_features = mask_features.reshape(batch * frames, channels, height * width)
    logits = torch.bmm(mask_embed.reshape(batch * frames, queries, channels), flat_features)
    return logits.view(batch, frames, queries, height, width)
