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

from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

Matching = Literal["paper", "dvis-release"]
MATCHING_MODES: tuple[str, ...] = ("paper", "dvis-release")


def cosine_cost(reference: Tensor, current: Tensor) -> Tensor:
    """reference (Q, C), current (Q', C) -> cost (Q, Q') = 1 - cosine, NaN replaced by 0."""
    reference = reference / (reference.norm(dim=-1, keepdim=True) + 1e-6)
    current = current / (current.norm(dim=-1, keepdim=True) + 1e-6)
    cost = 1 - reference @ current.transpose(0, 1)
    return torch.nan_to_num(cost, nan=0.0, posinf=0.0, neginf=0.0)


def match_queries(reference: Tensor, current: Tensor, matching: Matching = "paper") -> Tensor:
    """Indices that reorder ``current`` (Q, C) into the reference slot order.

    Returns a (Q,) int64 tensor ``order`` such that ``current[order]`` is the reordered frame.
    """
    cost = cosine_cost(reference.detach().float(), current.detach().float()).cpu().numpy()
    if matching == "paper":
        _, order = linear_sum_assignment(cost)
    elif matching == "dvis-release":
        _, order = linear_sum_assignment(cost.T)
    else:
        raise ValueError(f"matching must be one of {MATCHING_MODES}, got {matching!r}")
    return torch.from_numpy(np.asarray(order, dtype=np.int64)).to(current.device)


def match_batch(reference: Tensor, current: Tensor, matching: Matching = "paper") -> Tensor:
    """Batched :func:`match_queries`: reference, current (B, Q, C) -> order (B, Q)."""
    return torch.stack([match_queries(r, c, matching) for r, c in zip(reference, current)])


def reorder(queries: Tensor, order: Tensor) -> Tensor:
    """queries (B, Q, C), order (B, Q) -> queries[b, order[b]] (B, Q, C)."""
    return torch.gather(queries, 1, order.unsqueeze(-1).expand_as(queries))
