"""The online referring tracker (the paper, Sec. 3.2; the released ``ReferringTracker``).

For every frame t the segmenter's queries ``S_t`` are matched to the previous frame's matched
queries (Hungarian on cosine), reordered into the reference slot order (``S~_t``) and denoised by
L blocks of referring cross-attention -> self-attention -> FFN. The referring cross-attention
uses ``S~_t`` (block 0) or the previous block's output as identification, the previous frame's
last-block output as query, and ``S_t`` as keys and values. Query slot i therefore means the same
object in every frame.

The state that links consecutive calls is an explicit :class:`TrackerState`; a video can be fed
window by window (any sizes, down to one frame) with the same result as one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dvis.errors import ConfigError, InputError
from dvis.modeling.layers import (
    FFNLayer,
    ReferringCrossAttentionLayer,
    SelfAttentionLayer,
    mask_logits,
    prediction_heads,
    xavier_init_matrices,
)
from dvis.modeling.matching import MATCHING_MODES, Matching, match_window, reorder

# Ablations of the paper (Tables 6 and 7); DVIS is ("referring", "matched").
CROSS_ATTENTION_KINDS = ("referring", "standard")
INITIAL_VALUES = ("matched", "unmatched", "previous", "zero")


@dataclass
class TrackerConfig:
    """Tracker sizes, matching convention and the two ablation switches.

    cross_attention: ``"referring"`` (RCA, DVIS) or ``"standard"``: every block is
        ``LN(x + MHA(q=x, k=v=S_t))`` with x = the previous frame's output for block 0 and the
        previous block's output after that (the identification is the query; S~_t is unused).
    initial_value: block 0's identification on frames after the first: ``"matched"`` (S~_t,
        DVIS), ``"unmatched"`` (S_t in the segmenter's order), ``"previous"`` (the previous
        frame's output, the query) or ``"zero"``. Only with ``cross_attention="referring"``.
    match_noise: training only (a no-op in eval mode): the probability, per video and frame after
        the first, that the frame's Hungarian matching is replaced by a random permutation of its
        queries, so the slot's identification (and the reference the next frame is matched to)
        is another object's query and the tracker must find its object through the referring
        cross-attention. DVIS++'s "hard" denoising training (its default ratio 0.5); 0 in DVIS.
    """

    num_classes: int = 25
    hidden_dim: int = 256
    feedforward_dim: int = 2048
    num_heads: int = 8
    num_layers: int = 6
    mask_dim: int = 256
    matching: Matching = "paper"
    cross_attention: str = "referring"
    initial_value: str = "matched"
    match_noise: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for sizes that build no tracker and for unknown options."""
        check_sizes(self)
        if self.matching not in MATCHING_MODES:
            raise ConfigError(f"matching must be one of {MATCHING_MODES}, got {self.matching!r}")
        if self.cross_attention not in CROSS_ATTENTION_KINDS:
            raise ConfigError(f"cross_attention must be one of {CROSS_ATTENTION_KINDS}, got {self.cross_attention!r}")
        if self.initial_value not in INITIAL_VALUES:
            raise ConfigError(f"initial_value must be one of {INITIAL_VALUES}, got {self.initial_value!r}")
        if self.cross_attention == "standard" and self.initial_value != "matched":
            raise ConfigError("initial_value applies to referring cross-attention only; standard cross-attention "
                              "uses the previous frame's output (leave initial_value='matched')")
        if not 0.0 <= self.match_noise <= 1.0:
            raise ConfigError(f"match_noise is a probability in [0, 1], got {self.match_noise!r}")


SIZE_FIELDS = ("num_classes", "hidden_dim", "feedforward_dim", "num_heads", "num_layers", "mask_dim")


def check_sizes(config) -> None:
    """ConfigError unless the tracker's / refiner's sizes are positive integers and the heads divide
    hidden_dim."""
    for name in SIZE_FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    if config.hidden_dim % config.num_heads:
        raise ConfigError(f"num_heads={config.num_heads} must divide hidden_dim={config.hidden_dim}")


@dataclass
class TrackerState:
    """What one call hands to the next call on the same videos.

    last_output: (B, Q, C) previous frame's last-block output, before the final LayerNorm.
    reference:   (B, Q, C) previous frame's matched (reordered) segmenter queries.
    num_frames:  frames of the video processed so far.
    """

    last_output: Tensor
    reference: Tensor
    num_frames: int


@dataclass
class TrackerOutput:
    """Tracker predictions, batch-first layout.

    pred_logits:   (B, T, Q, K+1) class logits of the last block.
    pred_masks:    (B, T, Q, H, W) mask logits of the last block (None if not requested).
    pred_embds:    (B, T, Q, C) normed last-block output (the refiner's input).
    match_indices: (B, T, Q) reorder indices used at each frame (identity on a first frame).
    aux_logits:    per earlier block (B, T, Q, K+1) (only with ``return_aux``).
    aux_masks:     per earlier block (B, T, Q, H, W) (only with ``return_aux`` and masks).
    """

    pred_logits: Tensor
    pred_masks: Tensor | None
    pred_embds: Tensor
    match_indices: Tensor
    aux_logits: list[Tensor] | None = None
    aux_masks: list[Tensor] | None = None


def check_embeds(name: str, embeds: Tensor, hidden_dim: int) -> None:
    if not isinstance(embeds, Tensor) or embeds.dim() != 4 or embeds.shape[-1] != hidden_dim:
        shape = tuple(embeds.shape) if isinstance(embeds, Tensor) else type(embeds).__name__
        raise InputError(f"{name} must be (B, T, Q, {hidden_dim}), got {shape}")
    if embeds.shape[1] == 0 or embeds.shape[2] == 0:
        raise InputError(f"{name} has no frames or no queries: {tuple(embeds.shape)}")


def check_mask_features(mask_features: Tensor, embeds: Tensor, mask_dim: int) -> None:
    batch, frames = embeds.shape[:2]
    if (
        not isinstance(mask_features, Tensor)
        or mask_features.dim() != 5
        or tuple(mask_features.shape[:3]) != (batch, frames, mask_dim)
    ):
        shape = tuple(mask_features.shape) if isinstance(mask_features, Tensor) else None
        raise InputError(
            f"mask_features must be (B={batch}, T={frames}, C={mask_dim}, H, W), got {shape}"
        )


class ReferringTracker(nn.Module):
    """Referring tracker. Parameter names follow the released ``tracker.*`` keys."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TrackerConfig()
        dim, layers = config.hidden_dim, config.num_layers
        self.transformer_cross_attention_layers = nn.ModuleList(
            ReferringCrossAttentionLayer(dim, config.num_heads) for _ in range(layers)
        )
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, config.num_heads) for _ in range(layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(dim, config.feedforward_dim) for _ in range(layers)
        )
        xavier_init_matrices(self.transformer_cross_attention_layers, self.transformer_self_attention_layers,
                             self.transformer_ffn_layers)
        self.decoder_norm, self.class_embed, self.mask_embed = prediction_heads(dim, config.num_classes, config.mask_dim)

    # ------------------------------------------------------------------ blocks
    def _block(self, index: int, identification: Tensor, query: Tensor, memory: Tensor) -> Tensor:
        x = self.transformer_cross_attention_layers[index](identification, query, memory)
        x = self.transformer_self_attention_layers[index](x)
        return self.transformer_ffn_layers[index](x)

    def _first_frame(self, frame: Tensor) -> list[Tensor]:
        """Blocks on a video's first frame: ID = Q = previous output, K = V = frame (B, Q, C)."""
        outputs, x = [], frame
        for index in range(self.config.num_layers):
            x = self._block(index, x, x, frame)
            outputs.append(x)
        return outputs

    def _next_frame(self, frame: Tensor, matched: Tensor, previous: Tensor) -> list[Tensor]:
        """Blocks on a later frame: ID = matched / previous block, Q = previous frame's output.

        (Ablations: ``standard`` cross-attention chains ID = Q = previous block from the previous
        frame's output; other initial values replace ``matched`` as block 0's ID.)
        """
        config = self.config
        if config.cross_attention == "standard":
            outputs, x = [], previous
            for index in range(config.num_layers):
                x = self._block(index, x, x, frame)
                outputs.append(x)
            return outputs
        initial = {"matched": matched, "unmatched": frame, "previous": previous}.get(config.initial_value)
        outputs, x = [], torch.zeros_like(frame) if initial is None else initial
        for index in range(config.num_layers):
            x = self._block(index, x, previous, frame)
            outputs.append(x)
        return outputs

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        frame_embeds: Tensor,
        mask_features: Tensor | None = None,
        state: TrackerState | None = None,
        return_aux: bool = False,
        orders: Tensor | None = None,
    ) -> tuple[TrackerOutput, TrackerState]:
        """Track a window of frames.

        frame_embeds:  (B, T, Q, C) segmenter queries (after the decoder LayerNorm).
        mask_features: (B, T, C_mask, H, W) or None (then no masks are computed).
        state:         None to start new videos, or the state returned by the previous window.
        return_aux:    also return every earlier block's logits (and masks) for deep supervision.
        orders:        (B, T, Q) the window's slot orders if already matched (``PendingMatch(
                       state.reference, frame_embeds).orders(matching)``, as the inference pipeline
                       does to solve them while the device works); None: matched here.
        """
        check_embeds("frame_embeds", frame_embeds, self.config.hidden_dim)
        if mask_features is not None:
            check_mask_features(mask_features, frame_embeds, self.config.mask_dim)
        if state is not None and state.last_output.shape != frame_embeds[:, 0].shape:
            raise InputError(
                f"tracker state is for (B, Q, C) = {tuple(state.last_output.shape)} but this window "
                f"has {tuple(frame_embeds[:, 0].shape)}; pass state=None to start new videos"
            )
        if orders is None:
            start = 0 if state is not None else 1  # a video's first frame keeps its order
            orders = match_window(None if state is None else state.reference, frame_embeds, self.config.matching,
                                  self._noise(frame_embeds.shape, start))
        elif tuple(orders.shape) != tuple(frame_embeds.shape[:3]):
            raise InputError(f"orders must be (B, T, Q) = {tuple(frame_embeds.shape[:3])}, got {tuple(orders.shape)}")
        blocks_per_frame = []
        for t in range(frame_embeds.shape[1]):
            frame = frame_embeds[:, t]
            if state is None:
                matched = frame
                outputs = self._first_frame(frame)
                frames_seen = 0
            else:
                matched = reorder(frame, orders[:, t])
                outputs = self._next_frame(frame, matched, state.last_output)
                frames_seen = state.num_frames
            state = TrackerState(outputs[-1], matched, frames_seen + 1)
            blocks_per_frame.append(outputs if return_aux else outputs[-1:])
        # (L', B, T, Q, C): L' = L with return_aux, else only the last block
        blocks = torch.stack([torch.stack(outputs, dim=1) for outputs in blocks_per_frame], dim=2)
        output = self.heads(blocks, mask_features, return_aux)
        output.match_indices = orders
        return output, state

    def _noise(self, shape: torch.Size, start: int) -> dict[tuple[int, int], Tensor]:
        """In training, {(b, t): random order} for each video b and frame t >= start drawn with
        probability ``match_noise`` (torch's global generator, so seeded runs repeat)."""
        if not self.training or self.config.match_noise == 0.0:
            return {}
        batch, frames, queries = shape[:3]
        replaced = {}
        for t in range(start, frames):
            for b in (torch.rand(batch) < self.config.match_noise).nonzero().flatten().tolist():
                replaced[b, t] = torch.randperm(queries)
        return replaced

    def heads(
        self, blocks: Tensor, mask_features: Tensor | None, return_aux: bool
    ) -> TrackerOutput:
        """blocks (B, L', T, Q, C) pre-norm block outputs -> predictions of the last block (+aux)."""
        normed = self.decoder_norm(blocks)
        logits = self.class_embed(normed)  # (B, L', T, Q, K+1)
        masks = None
        if mask_features is not None:
            used = normed if return_aux else normed[:, -1:]
            embeds = self.mask_embed(used)  # (B, L'', T, Q, C_mask)
            masks = [mask_logits(embeds[:, i], mask_features) for i in range(embeds.shape[1])]
        return TrackerOutput(
            pred_logits=logits[:, -1],
            pred_masks=None if masks is None else masks[-1],
            pred_embds=normed[:, -1],
            match_indices=torch.empty(0),
            aux_logits=[logits[:, i] for i in range(logits.shape[1] - 1)] if return_aux else None,
            aux_masks=masks[:-1] if (return_aux and masks is not None) else None,
        )

    def frame_forward(self, frame_embeds: Tensor) -> Tensor:
        """The refiner's cross-attention memory: every frame as a first frame, then the norm.

        frame_embeds (B, T, Q, C) -> (B, T, Q, C).
        """
        check_embeds("frame_embeds", frame_embeds, self.config.hidden_dim)
        batch, frames, queries, channels = frame_embeds.shape
        flat = frame_embeds.reshape(batch * frames, queries, channels)
        return self.decoder_norm(self._first_frame(flat)[-1]).view_as(frame_embeds)
