"""Hungarian matchers between predicted queries and ground-truth objects (the paper, Sec. 3.4; the released training code).

* per frame (segmenter): transformers' ``Mask2FormerHungarianMatcher`` (used inside
  :class:`dvis.training.losses.DVISLoss`);
* first appearance (tracker, the release's ``VideoHungarianMatcher_Consistent``):
  :func:`match_first_appearance`;
* video-level mask tubes (refiner, the release's ``VideoHungarianMatcher`` on the clip laid out as
  one tall (T*h, w) image): :func:`match_tubes`.

Cost = ``class_weight * (-p[class]) + mask_weight * BCE + dice_weight * dice`` on ``num_points``
random points shared by all masks (for tubes: ``num_points * T`` points over the tall image, as
the release). The pairwise BCE/dice are transformers' functions; the assignment is scipy's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from transformers.models.mask2former.modeling_mask2former import (
    pair_wise_dice_loss,
    pair_wise_sigmoid_cross_entropy_loss,
    sample_point,
)

Match = tuple[Tensor, Tensor]  # (query indices (M,), target indices (M,)) int64
USED_QUERY_COST = 1e6  # the release's cost for queries already taken by an earlier frame


@dataclass(frozen=True)
class MatchCosts:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    num_points: int = 12544


def _sample_tubes(masks: Tensor, coords: Tensor) -> Tensor:
    """masks (R, T, H, W), coords (1, P, 2) in [0, 1] -> (R, T*P) bilinear samples."""
    return sample_point(masks, coords.expand(masks.shape[0], -1, -1), align_corners=False).flatten(1)


@torch.no_grad()
def pairwise_cost(
    probs: Tensor, pred_masks: Tensor, target_classes: Tensor, target_masks: Tensor, costs: MatchCosts
) -> Tensor:
    """Cost (Q, N) of assigning query q to object n.

    probs (Q, K+1) class probabilities; pred_masks (Q, T, h, w) mask logits; target_classes (N,);
    target_masks (N, T, H, W) in {0, 1} (any resolution: points are in normalised coordinates).
    """
    coords = torch.rand(1, costs.num_points, 2, device=pred_masks.device)
    pred_points = _sample_tubes(pred_masks.float(), coords)
    target_points = _sample_tubes(target_masks.to(pred_points), coords)
    cost = (
        costs.mask_weight * pair_wise_sigmoid_cross_entropy_loss(pred_points, target_points)
        + costs.dice_weight * pair_wise_dice_loss(pred_points, target_points)
        - costs.class_weight * probs.float()[:, target_classes]
    )
    big = torch.finfo(cost.dtype).max
    return torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)


def _assign(cost: Tensor) -> Match:
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def _empty() -> Match:
    return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)


@torch.no_grad()
def match_tubes(logits: Tensor, pred_masks: Tensor, target_classes: Tensor, target_masks: Tensor,
                costs: MatchCosts) -> Match:
    """Video-level matching of one clip on its tall (T*h, w) image, ``num_points * T`` points.

    logits (Q, K+1) video class logits; pred_masks (T, Q, h, w); target_classes (N,);
    target_masks (T, N, H, W). Returns (queries, objects), min(Q, N) pairs.
    """
    if target_classes.numel() == 0:
        return _empty()
    frames = pred_masks.shape[0]
    tall_pred = pred_masks.transpose(0, 1).flatten(1, 2)[:, None]  # (Q, 1, T*h, w)
    tall_target = target_masks.transpose(0, 1).flatten(1, 2)[:, None]  # (N, 1, T*H, W)
    cost = pairwise_cost(logits.float().softmax(-1), tall_pred, target_classes, tall_target,
                         replace(costs, num_points=costs.num_points * frames))
    return _assign(cost)


@torch.no_grad()
def match_first_appearance(logits: Tensor, pred_masks: Tensor, target_classes: Tensor, target_masks: Tensor,
                           present: Tensor, costs: MatchCosts) -> Match:
    """Each object is matched on the frame where it first appears; the pair holds for the clip.

    logits (T, Q, K+1) per-frame class logits; pred_masks (T, Q, h, w); target_classes (N,);
    target_masks (T, N, H, W); present (T, N) bool. Objects never present are left unmatched.
    Frames are processed in order; queries taken by an earlier frame cost 1e6 (as the release).
    """
    seen = present.any(0)
    first = torch.where(seen, present.float().argmax(0), torch.full_like(seen, -1, dtype=torch.int64))
    queries: list[Tensor] = []
    objects: list[Tensor] = []
    for t in sorted(set(first[seen].tolist())):
        new = torch.nonzero(first == t).flatten()
        cost = pairwise_cost(logits[t].float().softmax(-1), pred_masks[t][:, None], target_classes[new],
                             target_masks[t][new][:, None], costs).clone()
        if queries:
            cost[torch.cat(queries).to(cost.device)] = USED_QUERY_COST
        rows, cols = _assign(cost)
        queries.append(rows)
        objects.append(new.cpu()[cols])
    if not queries:
        return _empty()
    return torch.cat(queries), torch.cat(objects)
