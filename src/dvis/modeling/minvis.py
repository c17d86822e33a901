"""MinVIS baseline: link the segmenter's queries of consecutive frames by Hungarian matching.

No tracker, no refiner: frame t's queries, class logits and masks are reordered into the slot
order of frame t-1 (cosine cost on the normed queries, the same matching conventions as the
tracker). The state between windows is explicit, like the tracker's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dvis.modeling.matching import Matching, match_window, reorder


@dataclass
class MinVISState:
    """reference: (B, Q, C) previous frame's reordered queries; num_frames seen so far."""

    reference: Tensor
    num_frames: int


@dataclass
class MinVISOutput:
    """Segmenter predictions reordered into stable slots (batch-first, per frame).

    pred_logits (B, T, Q, K+1), pred_masks (B, T, Q, h, w) or None, pred_embds (B, T, Q, C),
    match_indices (B, T, Q).
    """

    pred_logits: Tensor
    pred_masks: Tensor | None
    pred_embds: Tensor
    match_indices: Tensor


def minvis_match(
    embeds: Tensor,
    logits: Tensor,
    masks: Tensor | None,
    state: MinVISState | None,
    matching: Matching = "paper",
    orders: Tensor | None = None,
) -> tuple[MinVISOutput, MinVISState]:
    """embeds (B, T, Q, C), logits (B, T, Q, K+1), masks (B, T, Q, h, w) -> reordered outputs.
    ``orders`` (B, T, Q): the window's slot orders if already matched (as in the tracker)."""
    order = orders if orders is not None else match_window(None if state is None else state.reference, embeds, matching)
    last = reorder(embeds[:, -1], order[:, -1])
    state = MinVISState(last, (0 if state is None else state.num_frames) + embeds.shape[1])

    def gather(x: Tensor) -> Tensor:
        index = order.view(*order.shape, *([1] * (x.dim() - 3))).expand_as(x)
        return torch.gather(x, 2, index)

    output = MinVISOutput(gather(logits), None if masks is None else gather(masks), gather(embeds), order)
    return output, state
