"""Frame-to-frame query matching (the paper, Eq. 1, and the released code's variant).

``cost[r, c] = 1 - cos(reference_r, current_c)`` (each norm gets 1e-6 added, NaN costs become 0),
solved with the Hungarian algorithm (scipy). Two conventions exist:

``"paper"`` (Eq. 1, default for new models)
    ``assignment = linear_sum_assignment(cost)[1]``: reference slot ``r`` receives current query
    ``assignment[r]``. The reordered frame is ``current[assignment]`` and the returned indices
    are ``assignment``.

``"dvis-release"`` (bit-compatible with released checkpoints)
    The released code solves the *transposed* problem and keeps, for each current query ``i``,
    the slot ``idx[i]`` it was assigned to, then reorders with ``current[idx]``: the inverse
    permutation. It agrees with ``"paper"`` only when the permutation is its own inverse.
    The returned indices are the released code's ``idx``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

Matching = Literal["paper", "dvis-release"]
MATCHING_MODES: tuple[str, ...] = ("paper", "dvis-release")


def cosine_cost(reference: Tensor, current: Tensor) -> Tensor:
    """reference (..., Q, C), current (..., Q', C) -> cost (..., Q, Q') = 1 - cosine, NaN replaced by 0."""
    reference = reference / (reference.norm(dim=-1, keepdim=True) + 1e-6)
    current = current / (current.norm(dim=-1, keepdim=True) + 1e-6)
    cost = 1 - reference @ current.transpose(-1, -2)
    return torch.nan_to_num(cost, nan=0.0, posinf=0.0, neginf=0.0)


def match_queries(reference: Tensor, current: Tensor, matching: Matching = "paper") -> Tensor:
    """Indices that reorder ``current`` (Q, C) into the reference slot order.

    Returns a (Q,) int64 tensor ``order`` such that ``current[order]`` is the reordered frame.
    """
    return match_window(reference[None], current[None, None], matching)[0, 0]


def solve(cost: np.ndarray, matching: Matching) -> np.ndarray:
    """Hungarian assignment of a (Q, Q) reference x current cost in either convention -> (Q,) int64."""
    if matching == "paper":
        _, order = linear_sum_assignment(cost)
    elif matching == "dvis-release":
        _, order = linear_sum_assignment(cost.T)
    else:
        raise ValueError(f"matching must be one of {MATCHING_MODES}, got {matching!r}")
    return np.asarray(order, dtype=np.int64)


class PendingMatch:
    """A window's matching costs on their way to the host: the first half of :func:`match_window`.

    Created right after the window's segmenter call, it computes all cosines of the window on the
    device and, on CUDA, starts their copy into pinned host memory without waiting for it.
    :meth:`orders` then waits for that copy and runs the Hungarian chain on the host. In between
    the caller can queue more device work (the next window's segmenter, see
    :func:`dvis.modeling.pipeline.track_windows`), which then runs while the host solves.

    reference: (B, Q, C) the reordered last frame before the window, or None when the window
        starts the videos (then frame 0 keeps its own order).
    frames:    (B, T, Q, C) the window's segmenter queries.
    """

    def __init__(self, reference: Tensor | None, frames: Tensor) -> None:
        frames = frames.detach().float()
        self.shape, self.device, self.starts = tuple(frames.shape[:3]), frames.device, reference is None
        if reference is None:
            previous, current = frames[:, :-1], frames[:, 1:]
        else:
            previous, current = torch.cat([reference.detach().float()[:, None], frames[:, :-1]], dim=1), frames
        costs = cosine_cost(previous, current)  # (B, T or T-1, Q, Q)
        self._ready = None
        if costs.device.type == "cuda":
            self._costs = torch.empty(costs.shape, dtype=costs.dtype, device="cpu", pin_memory=True)
            self._costs.copy_(costs, non_blocking=True)  # the only host transfer
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:
            self._costs = costs.cpu()

    def orders(self, matching: Matching = "paper", replaced: Mapping[tuple[int, int], Tensor] | None = None) -> Tensor:
        """Slot orders (B, T, Q) int64 on the frames' device: ``frames[b, t, orders[b, t]]`` is the
        reordered frame. ``replaced``: {(b, t): order} used instead of frame t's matching in video b
        (training noise); later frames are matched to that order, as if the matching had returned it."""
        if self._ready is not None:
            self._ready.synchronize()
        costs = self._costs.numpy()
        batch, length, queries = self.shape
        orders = np.empty((batch, length, queries), dtype=np.int64)
        replaced = replaced or {}
        start = 1 if self.starts else 0
        for b in range(batch):
            rows = np.arange(queries)  # the previous frame's order (the reference is already reordered)
            if self.starts:
                orders[b, 0] = rows
            for t in range(start, length):
                order = replaced.get((b, t))
                rows = solve(costs[b, t - start][rows], matching) if order is None else order.cpu().numpy()
                orders[b, t] = rows
        host = torch.from_numpy(orders)
        if self.device.type == "cuda":
            return host.pin_memory().to(self.device, non_blocking=True)
        return host.to(self.device)


def match_window(
    reference: Tensor | None,
    frames: Tensor,
    matching: Matching = "paper",
    replaced: Mapping[tuple[int, int], Tensor] | None = None,
) -> Tensor:
    """Slot orders of a whole window with one device-to-host transfer (not one per frame).

    reference (B, Q, C) or None, frames (B, T, Q, C), ``replaced``: see :class:`PendingMatch`.
    Returns orders (B, T, Q) int64 on ``frames.device``: ``frames[b, t, orders[b, t]]`` is the
    reordered frame, exactly :func:`match_queries` applied frame after frame.

    Frame t's reference is frame t-1 reordered, so its cost is ``1 - cos(S_{t-1}, S_t)`` with
    the rows taken in frame t-1's order: all cosines are one batched product on the device, and
    only the Hungarian chain runs on the host.
    """
    return PendingMatch(reference, frames).orders(matching, replaced)


def reorder(queries: Tensor, order: Tensor) -> Tensor:
    """queries (B, Q, C), order (B, Q) -> queries[b, order[b]] (B, Q, C)."""
    return torch.gather(queries, 1, order.unsqueeze(-1).expand_as(queries))
