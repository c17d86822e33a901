"""The segmenter's fast path (``precision="bf16"``): what it changes and why each change is safe.

``"fp32"`` (the default) runs transformers' network exactly as built; the goldens test that path.
``"bf16"`` runs the same weights with:

- ``torch.autocast(dtype=bfloat16)``: convolutions and matrix products in bfloat16 (a CPU with
  AVX512-BF16 does them ~4x faster than float32), everything autocast keeps in float32 (e.g.
  ``grid_sample``) stays there. The residual adds of the deformable encoder promote to float32.
- channels-last input, so the backbone's convolutions run on NHWC tensors end to end (oneDNN's
  fast layout; the pixel decoder's ``flatten(2)`` of an NHWC map is then a view).
- multi-scale deformable attention (:func:`deformable_sampling`) that adds each level's weighted
  samples into one running sum instead of concatenating the samples of all levels and weighting
  them afterwards (transformers' pure-PyTorch function does the latter: one (B*heads, D, Q, L*P)
  copy per layer). The sampling offsets, attention weights and the sampled values stay float32, so
  the sampling positions are as exact as in the float32 path.

Outputs are returned in float32. The deviation from the float32 path is measured on the goldens
(``tests/test_fast_path.py``) and its AP effect on a held-out synthetic split (docs/model.md).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, what: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ValueError naming ``what``."""
    if precision not in PRECISIONS:
        raise ValueError(f"{what} must be one of {PRECISIONS}, got {precision!r}")
    return precision


def deformable_sampling(value: Tensor, spatial_shapes: list[tuple[int, int]], locations: Tensor,
                        weights: Tensor) -> Tensor:
    """Multi-scale deformable attention's sampling and weighted sum, one level at a time.

    value (B, S, heads, D) with S = sum of h*w over levels (level-major, row-major pixels),
    locations (B, Q, heads, L, P, 2) as (x, y) in 0..1, weights (B, Q, heads, L, P)
    -> (B, Q, heads*D). Bilinear sampling with zero padding, ``align_corners=False``.
    """
    batch, _, heads, dim = value.shape
    queries, points = locations.shape[1], locations.shape[4]
    grids = 2 * locations - 1
    total = None
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        # (B, h*w, heads, D) -> (B*heads, D, h, w)
        level_value = value[:, start:start + height * width].permute(0, 2, 3, 1).reshape(batch * heads, dim, height, width)
        start += height * width
        grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries * points, 1, 2)
        samples = F.grid_sample(level_value.float(), grid.float(), mode="bilinear", padding_mode="zeros",
                                align_corners=False).view(batch * heads, dim, queries, points)
        level_weights = weights[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries, points)
        part = torch.einsum("bdqp,bqp->bdq", samples, level_weights.float())  # (B*heads, D, Q)
        total = part if total is None else total + part
    return total.reshape(batch, heads * dim, queries).transpose(1, 2)


def deformable_attention_forward(attn: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None = None,
                                 encoder_hidden_states: Tensor | None = None, position_embeddings: Tensor | None = None,
                                 reference_points: Tensor | None = None,
                                 spatial_shapes_list: list[tuple[int, int]] | None = None,
                                 **_unused) -> tuple[Tensor, Tensor]:
    """Forward of transformers' ``Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention``
    with :func:`deformable_sampling`; same arguments and outputs (the pixel decoder's 2-d
    reference points only). Offsets and attention weights are computed in float32."""
    batch, num_queries, _ = hidden_states.shape
    heads, levels, points = attn.n_heads, attn.n_levels, attn.n_points
    query = hidden_states if position_embeddings is None else hidden_states + position_embeddings
    value = attn.value_proj(encoder_hidden_states)
    if attention_mask is not None:
        value = value.masked_fill(attention_mask[..., None], 0.0)
    value = value.view(batch, value.shape[1], heads, attn.d_model // heads)
    with torch.autocast(query.device.type, enabled=False):
        query = query.float()
        offsets = F.linear(query, attn.sampling_offsets.weight.float(), attn.sampling_offsets.bias.float())
        logits = F.linear(query, attn.attention_weights.weight.float(), attn.attention_weights.bias.float())
        weights = logits.view(batch, num_queries, heads, levels * points).softmax(-1)
        weights = weights.view(batch, num_queries, heads, levels, points)
        # offsets are in pixels of each level: divide by (w, h)
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes_list], dtype=torch.float32, device=query.device)
        offsets = offsets.view(batch, num_queries, heads, levels, points, 2) / normalizer[:, None, :]
        locations = reference_points[:, :, None, :, None, :].float() + offsets
        sampled = deformable_sampling(value, spatial_shapes_list, locations, weights)
    return attn.output_proj(sampled), weights


@functools.cache
def _switching_class(base: type) -> type:
    """``base`` (transformers' deformable attention) whose forward is :func:`deformable_attention_forward`
    under bfloat16 autocast on the input's device, and ``base.forward`` otherwise (float32, or an
    AMP float16 autocast: transformers' path as built)."""

    def forward(self, hidden_states: Tensor, *args, **kwargs):
        device = hidden_states.device.type
        if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16:
            return deformable_attention_forward(self, hidden_states, *args, **kwargs)
        return base.forward(self, hidden_states, *args, **kwargs)

    name = f"Switching{base.__name__}"
    cls = type(name, (base,), {"forward": forward, "__module__": __name__, "__qualname__": name})
    globals()[name] = cls  # found by name, so a pickled model loads
    return cls


def install_fast_attention(module: nn.Module) -> int:
    """Give every deformable attention of ``module`` the switching forward (same parameters and
    state-dict keys; outside bfloat16 autocast it runs transformers' forward unchanged). The switch is
    autocast's own state, which is per thread, so a bf16 call never changes what an fp32 call in
    another thread runs, and ``torch.compile`` sees an ordinary method. Returns how many."""
    from transformers.models.mask2former.modeling_mask2former import (
        Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention as DeformableAttention,
    )

    attentions = [m for m in module.modules() if isinstance(m, DeformableAttention)]
    for attn in attentions:
        attn.__class__ = _switching_class(type(attn))
    return len(attentions)


@contextlib.contextmanager
def bf16_fast_path(device_type: str) -> Iterator[None]:
    """The fast path: bfloat16 autocast, under which the installed deformable attentions
    (:func:`install_fast_attention`) sample level by level."""
    with torch.autocast(device_type, dtype=torch.bfloat16):
        yield


def to_channels_last(pixel_values: Tensor) -> Tensor:
    """(T, 3, H, W) -> the same values in NHWC memory order (a no-op for other ranks)."""
    return pixel_values.contiguous(memory_format=torch.channels_last) if pixel_values.dim() == 4 else pixel_values
