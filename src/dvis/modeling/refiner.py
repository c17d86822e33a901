"""The offline temporal refiner (the paper, Sec. 3.3; the released ``TemporalRefiner``).

Input: the tracker's normed embeddings of every frame (B, T, Q, C) and the tracker's
``frame_forward`` memory (B, T, Q, C). Each of the L blocks applies, in order: long-term temporal
self-attention over the T frames of each object, short-term temporal convolution
``LN(x + Conv1d_k3(relu(Conv1d_k5(x))))`` with replicate padding, object self-attention among the
Q objects of a frame, cross-attention to the frame's memory, and an FFN. One class per object
comes from a softmax-over-time weighted average of the normed embeddings (Eq. 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dvis.errors import ConfigError, InputError
from dvis.modeling.layers import (
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
    mask_logits,
    prediction_heads,
    xavier_init_matrices,
)
from dvis.modeling.tracker import check_embeds, check_mask_features, check_sizes


@dataclass
class RefinerConfig:
    num_classes: int = 25
    hidden_dim: int = 256
    feedforward_dim: int = 2048
    num_heads: int = 8
    num_layers: int = 6
    mask_dim: int = 256
    # Ablation switches (all on in DVIS; the paper, Table 8).
    use_long_term_attention: bool = True
    use_short_term_conv: bool = True
    use_cross_attention: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for sizes that build no refiner and for switches that are not booleans."""
        check_sizes(self)
        for name in ("use_long_term_attention", "use_short_term_conv", "use_cross_attention"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}")


@dataclass
class RefinerOutput:
    """Refiner predictions, batch-first layout.

    video_logits: (B, Q, K+1) one class prediction per object for the whole clip.
    pred_logits:  (B, T, Q, K+1) the same logits for every frame (an expanded view).
    pred_masks:   (B, T, Q, H, W) mask logits of the last block (None if not requested).
    pred_embds:   (B, T, Q, C) normed last-block output.
    aux_logits / aux_masks: per earlier block, only with ``return_aux``.
    """

    video_logits: Tensor
    pred_logits: Tensor
    pred_masks: Tensor | None
    pred_embds: Tensor
    aux_logits: list[Tensor] | None = None
    aux_masks: list[Tensor] | None = None


class ShortTermConv(nn.Sequential):
    """Conv1d k5 -> ReLU -> Conv1d k3 over time, 'same' replicate padding (keys ``.0``, ``.2``)."""

    def __init__(self, dim: int) -> None:
        super().__init__(
            nn.Conv1d(dim, dim, 5, padding="same", padding_mode="replicate"),
            nn.ReLU(inplace=True),
            nn.Conv1d(dim, dim, 3, padding="same", padding_mode="replicate"),
        )


class TemporalRefiner(nn.Module):
    """Temporal refiner. Parameter names follow the released ``refiner.*`` keys."""

    def __init__(self, config: RefinerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or RefinerConfig()
        dim, layers, heads = config.hidden_dim, config.num_layers, config.num_heads
        self.transformer_time_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, heads) for _ in range(layers)
        )
        self.conv_short_aggregate_layers = nn.ModuleList(ShortTermConv(dim) for _ in range(layers))
        self.conv_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.transformer_obj_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, heads) for _ in range(layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, heads) for _ in range(layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(dim, config.feedforward_dim) for _ in range(layers)
        )
        xavier_init_matrices(self.transformer_time_self_attention_layers, self.transformer_obj_self_attention_layers,
                             self.transformer_cross_attention_layers, self.transformer_ffn_layers)
        self.decoder_norm, self.class_embed, self.mask_embed = prediction_heads(dim, config.num_classes, config.mask_dim)
        self.activation_proj = nn.Linear(dim, 1)

    def _block(self, index: int, x: Tensor, memory: Tensor) -> Tensor:
        """x, memory (B, T, Q, C) -> (B, T, Q, C)."""
        batch, frames, queries, channels = x.shape
        config = self.config
        per_object = x.transpose(1, 2).reshape(batch * queries, frames, channels)  # (BQ, T, C)
        if config.use_long_term_attention:
            per_object = self.transformer_time_self_attention_layers[index](per_object)
        if config.use_short_term_conv:
            conv = self.conv_short_aggregate_layers[index](per_object.transpose(1, 2))  # (BQ, C, T)
            per_object = self.conv_norms[index](per_object + conv.transpose(1, 2))
        x = per_object.view(batch, queries, frames, channels).transpose(1, 2)
        per_frame = x.reshape(batch * frames, queries, channels)  # (BT, Q, C)
        per_frame = self.transformer_obj_self_attention_layers[index](per_frame)
        if config.use_cross_attention:
            per_frame = self.transformer_cross_attention_layers[index](
                per_frame, memory.reshape(batch * frames, queries, channels)
            )
        per_frame = self.transformer_ffn_layers[index](per_frame)
        return per_frame.view(batch, frames, queries, channels)

    def video_class(self, normed: Tensor) -> Tensor:
        """Eq. 5: normed (..., T, Q, C) -> logits (..., Q, K+1) from a softmax-over-time average."""
        weights = self.activation_proj(normed).softmax(dim=-3)  # (..., T, Q, 1)
        return self.class_embed((normed * weights).sum(dim=-3))

    def forward(
        self,
        instance_embeds: Tensor,
        frame_memory: Tensor,
        mask_features: Tensor | None = None,
        return_aux: bool = False,
        mask_window: int | None = None,
    ) -> RefinerOutput:
        """Refine a clip.

        instance_embeds: (B, T, Q, C) tracker ``pred_embds``.
        frame_memory:    (B, T, Q, C) tracker ``frame_forward`` output.
        mask_features:   (B, T, C_mask, H, W) or None.
        mask_window:     compute mask logits this many frames at a time (same result).
        """
        check_embeds("instance_embeds", instance_embeds, self.config.hidden_dim)
        if frame_memory.shape != instance_embeds.shape:
            raise InputError(
                f"frame_memory must have the shape of instance_embeds {tuple(instance_embeds.shape)}, "
                f"got {tuple(frame_memory.shape)}"
            )
        if mask_features is not None:
            check_mask_features(mask_features, instance_embeds, self.config.mask_dim)
        x, blocks = instance_embeds, []
        for index in range(self.config.num_layers):
            x = self._block(index, x, frame_memory)
            blocks.append(x)
        used = blocks if return_aux else blocks[-1:]
        normed = self.decoder_norm(torch.stack(used, dim=1))  # (B, L', T, Q, C)
        video_logits = self.video_class(normed)  # (B, L', Q, K+1)
        frames = instance_embeds.shape[1]
        masks = None
        if mask_features is not None:
            mask_blocks = range(normed.shape[1]) if return_aux else [normed.shape[1] - 1]
            masks = [self._masks(normed[:, i], mask_features, mask_window) for i in mask_blocks]
        per_frame = video_logits.unsqueeze(2).expand(-1, -1, frames, -1, -1)
        return RefinerOutput(
            video_logits=video_logits[:, -1],
            pred_logits=per_frame[:, -1],
            pred_masks=None if masks is None else masks[-1],
            pred_embds=normed[:, -1],
            aux_logits=[per_frame[:, i] for i in range(per_frame.shape[1] - 1)] if return_aux else None,
            aux_masks=masks[:-1] if (return_aux and masks is not None) else None,
        )

    def _masks(self, normed: Tensor, mask_features: Tensor, window: int | None) -> Tensor:
        """normed (B, T, Q, C), mask_features (B, T, C_mask, H, W) -> (B, T, Q, H, W)."""
        frames = normed.shape[1]
        window = window or frames
        chunks = [
            mask_logits(self.mask_embed(normed[:, s : s + window]), mask_features[:, s : s + window])
            for s in range(0, frames, window)
        ]
        return torch.cat(chunks, dim=1)
