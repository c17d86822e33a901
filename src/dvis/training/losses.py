"""Mask2Former's set loss (the paper, Eq. 3-4 and 6-7; the released criterion), on transformers' ``Mask2FormerLoss``.

Terms: matched class cross-entropy (no-object weight 0.1), point-sampled sigmoid BCE and dice
on ``num_points`` points chosen by importance sampling (``oversample_ratio`` x points drawn, the
``importance_sample_ratio`` most uncertain kept, the rest uniform). Weighted 2 / 5 / 5 and
repeated on every decoder block (deep supervision; the last block's terms have no suffix, block
i's carry ``_i``).

* Segmenter stage: every frame is an image, matched per frame by transformers' matcher
  (``Mask2FormerLoss.forward``).
* Tracker stage: as the release, the B x T frames are the images of the batch; every frame's
  targets are all objects of the clip (an absent object has an empty mask), and one
  first-appearance matching per clip applies to every frame. Normalised by the number of
  (frame, object) pairs.
* Refiner stage: one video-level class per object. As the release, each clip's masks are laid
  out as one tall image (T*h, w) (targets (T*H, W)) and ``num_points * T`` points are sampled
  over the whole tube (importance sampling across it): one BCE mean and one dice per object and
  clip, normalised by the number of objects.

The object count used for normalisation is averaged over processes when torch.distributed is
initialised (as the release), so every replica optimises the same objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss, sample_point

from dvis.training.config import LossConfig
from dvis.training.matchers import Match, MatchCosts

TERMS = {"loss_cross_entropy": "class_weight", "loss_mask": "mask_weight", "loss_dice": "dice_weight"}


@dataclass
class ClipTargets:
    """Ground truth of one clip, padded to the batch's input size.

    classes (N,) int64; masks (T, N, H, W) float in {0, 1}; present (T, N) bool.
    Objects that are never present in the clip are already removed.
    """

    classes: Tensor
    masks: Tensor
    present: Tensor

    @property
    def num_frames(self) -> int:
        return self.masks.shape[0]

    def tube_masks(self) -> Tensor:
        """The clip's masks as one tall image per object: (N, T*H, W)."""
        return tall_image(self.masks.transpose(0, 1))


def tall_image(masks: Tensor) -> Tensor:
    """(..., T, h, w) -> (..., T*h, w): a clip's frames stacked top to bottom (the release's
    ``(t h) w`` layout for video-level matching and losses)."""
    return masks.flatten(-3, -2)


class DVISLoss(Mask2FormerLoss):
    """transformers' Mask2Former loss with the release's hyper-parameters, distributed-aware
    normalisation and the video variants used by the tracker and refiner stages."""

    def __init__(self, num_classes: int, config: LossConfig) -> None:
        settings = SimpleNamespace(
            num_labels=num_classes,
            no_object_weight=config.no_object_weight,
            train_num_points=config.num_points,
            oversample_ratio=config.oversample_ratio,
            importance_sample_ratio=config.importance_sample_ratio,
            class_weight=config.class_weight,
            dice_weight=config.dice_weight,
            mask_weight=config.mask_weight,
        )
        weights = {name: getattr(config, attr) for name, attr in TERMS.items()}
        super().__init__(settings, weights)
        self.config = config
        self.costs = MatchCosts(config.class_weight, config.mask_weight, config.dice_weight, config.num_points)

    # ------------------------------------------------------------------------- normalisation
    def get_num_masks(self, class_labels: list[Tensor], device: torch.device) -> Tensor:
        return self.average_count(sum(len(c) for c in class_labels), device)

    @staticmethod
    def average_count(count: int, device: torch.device) -> Tensor:
        """The object count averaged over processes, at least 1 (the release's ``num_masks``)."""
        value = torch.as_tensor(float(count), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(value)
            value = value / dist.get_world_size()
        return value.clamp(min=1)

    def weighted_total(self, terms: dict[str, Tensor]) -> Tensor:
        """Sum of every term times its weight (2 / 5 / 5 by default)."""
        return sum(self.weight_dict[name.rsplit("_", 1)[0] if name not in TERMS else name] * value
                   for name, value in terms.items())

    # ------------------------------------------------------------------------- segmenter stage
    def image_losses(self, pred_logits: Tensor, pred_masks: Tensor, aux: list[dict] | None,
                     mask_labels: list[Tensor], class_labels: list[Tensor]) -> dict[str, Tensor]:
        """Per-frame set loss. pred_logits (F, Q, K+1), pred_masks (F, Q, h, w); per frame
        mask_labels (N_f, H, W) float and class_labels (N_f,). aux: earlier blocks' predictions."""
        aux_predictions = None
        if aux and self.config.deep_supervision:
            aux_predictions = [{"masks_queries_logits": a["pred_masks"].float(),
                                "class_queries_logits": a["pred_logits"].float()} for a in aux]
        return self.forward(pred_masks.float(), pred_logits.float(), mask_labels, class_labels, aux_predictions)

    # -------------------------------------------------------------------------- video stages
    def frame_major_terms(self, logits: Tensor, masks: Tensor, targets: list[ClipTargets], matches: list[Match],
                          video_class: bool) -> dict[str, Tensor]:
        """Losses of one block with fixed matches (one match per clip).

        logits (B, T, Q, K+1) per-frame or (B, Q, K+1) video-level (``video_class``); masks
        (B, T, Q, h, w). Per-frame (tracker): the match applies to every frame, mask terms per
        (frame, object) pair. Video-level (refiner): mask terms per object on its (T*h, w) tube.
        """
        terms = self.blocks_mask_terms([masks], targets, [matches], video_class)[0]
        terms.update(self.class_terms(logits, targets, matches, video_class))
        return terms

    def class_terms(self, logits: Tensor, targets: list[ClipTargets], matches: list[Match],
                    video_class: bool) -> dict[str, Tensor]:
        if video_class:
            return self.loss_labels(logits.float(), [c.classes for c in targets], matches)
        frames = logits.shape[1]
        classes = [clip.classes for clip in targets for _ in range(frames)]
        return self.loss_labels(logits.flatten(0, 1).float(), classes, [m for m in matches for _ in range(frames)])

    def blocks_mask_terms(self, block_masks: list[Tensor], targets: list[ClipTargets],
                          block_matches: list[list[Match]], video_class: bool) -> list[dict[str, Tensor]]:
        """Mask BCE and dice of every block in one point-sampling pass (the blocks' matched masks
        are stacked; each row still gets its own random and uncertain points).

        block_masks: per block (B, T, Q, h, w) logits; block_matches: per block one match per clip.
        Per-frame (``video_class`` False): a row per (frame, matched pair), ``num_points`` points,
        normalised by the number of (frame, object) pairs. Video-level: a row per matched pair on
        the (T*h, w) tube, ``num_points * T`` points, normalised by the number of objects.
        """
        frames = block_masks[0].shape[1]
        objects = sum(len(clip.classes) for clip in targets)
        num_masks = self.average_count(objects if video_class else objects * frames, block_masks[0].device)
        # every target mask once: per clip its (N, T*H, W) tubes, or its (T*N, H, W) frame masks
        banks = [clip.tube_masks() if video_class else clip.masks.flatten(0, 1) for clip in targets]
        offsets = [sum(len(bank) for bank in banks[:b]) for b in range(len(banks))]
        preds, label_ids, owners = [], [], []
        for block, (masks, matches) in enumerate(zip(block_masks, block_matches)):
            for b, (clip, (src, tgt)) in enumerate(zip(targets, matches)):
                if len(src) == 0:
                    continue
                if video_class:  # (M, T*h, w) tubes
                    preds.append(tall_image(masks[b][:, src].transpose(0, 1)))
                    label_ids.append(offsets[b] + tgt)
                else:  # (T*M, h, w): every frame of every matched pair
                    preds.append(masks[b][:, src].flatten(0, 1))
                    objects_in_clip = clip.masks.shape[1]
                    label_ids.append((offsets[b] + torch.arange(frames)[:, None] * objects_in_clip + tgt[None]).flatten())
                owners.append(torch.full((len(preds[-1]),), block, dtype=torch.int64))
        if not preds:  # nothing to supervise: keep the graph, zero loss
            return [{"loss_mask": m.sum() * 0.0, "loss_dice": m.sum() * 0.0} for m in block_masks]
        pred = torch.cat(preds).float()[:, None]  # (R, 1, h', w')
        points = self.num_points * (frames if video_class else 1)
        with torch.no_grad():
            coords = uncertain_points(pred, points, self.oversample_ratio, self.importance_sample_ratio)
            point_labels = sample_labels(torch.cat(banks).to(pred), torch.cat(label_ids).to(pred.device), coords)
        point_logits = sample_point(pred, coords, align_corners=False).flatten(1)  # (R, P)
        bce = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none").mean(1)
        probs = point_logits.sigmoid()
        dice = 1 - (2 * (probs * point_labels).sum(1) + 1) / (probs.sum(1) + point_labels.sum(1) + 1)
        owner = torch.cat(owners).to(pred.device)
        per_block = torch.zeros(len(block_masks), 2, device=pred.device, dtype=pred.dtype)
        per_block = per_block.index_add(0, owner, torch.stack([bce, dice], 1)) / num_masks
        return [{"loss_mask": per_block[i, 0] + m.sum() * 0.0, "loss_dice": per_block[i, 1] + m.sum() * 0.0}
                for i, m in enumerate(block_masks)]

    def video_losses(self, blocks: list[tuple[Tensor, Tensor]], targets: list[ClipTargets],
                     matcher, guide: tuple[Tensor, Tensor] | None, video_class: bool) -> dict[str, Tensor]:
        """Deep-supervised video loss.

        blocks: (logits, masks) per decoder block, last block last. ``matcher(logits, masks)``
        returns one match per clip. ``guide``: (logits, masks) of the frozen previous stage in
        the slot order of this stage's queries; when given it is matched once and the result
        used for every block (guided matching), otherwise every block is matched on its own
        predictions (as the release).
        """
        if not self.config.deep_supervision:
            blocks = blocks[-1:]
        fixed = matcher(*guide) if guide is not None else None
        matches = [fixed if fixed is not None else matcher(logits, masks) for logits, masks in blocks]
        mask_terms = self.blocks_mask_terms([masks for _, masks in blocks], targets, matches, video_class)
        losses: dict[str, Tensor] = {}
        last = len(blocks) - 1
        for index, ((logits, _), block_matches, terms) in enumerate(zip(blocks, matches, mask_terms)):
            terms.update(self.class_terms(logits, targets, block_matches, video_class))
            suffix = "" if index == last else f"_{index}"
            losses.update({f"{name}{suffix}": value for name, value in terms.items()})
        return losses


def sample_labels(bank: Tensor, ids: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples of target masks without a copy per row: bank (U, H, W) every target mask
    once, ids (R,) the mask of each row, coords (R, P, 2) in [0, 1] -> (R, P).

    The rows of one mask (one per decoder block) are sampled in one call on that mask: each
    row's points go to a slot of its mask's point list (unused slots sample the centre).
    """
    rows, points = coords.shape[:2]
    counts = torch.bincount(ids, minlength=len(bank))
    order = torch.argsort(ids, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(ids)
    slot[order] = torch.arange(rows, device=ids.device) - starts[ids[order]]
    grid = torch.full((len(bank), int(counts.max()), points, 2), 0.5, dtype=coords.dtype, device=coords.device)
    grid[ids, slot] = coords
    sampled = sample_point(bank[:, None], grid.flatten(1, 2), align_corners=False)  # (U, 1, K*P)
    return sampled.view(len(bank), -1, points)[ids, slot]


def uncertain_points(logits: Tensor, num_points: int, oversample_ratio: float, importance_ratio: float) -> Tensor:
    """Mask2Former's importance sampling: (R, 1, h, w) logits -> (R, num_points, 2) coordinates in
    [0, 1]. ``oversample_ratio * num_points`` uniform candidates, the ``importance_ratio`` share
    with the smallest |logit| kept, the rest uniform."""
    rows = logits.shape[0]
    candidates = uniform((rows, int(num_points * oversample_ratio), 2), logits.device)
    uncertainty = -sample_point(logits, candidates, align_corners=False).abs()[:, 0]  # (R, candidates)
    num_uncertain = int(importance_ratio * num_points)
    chosen = uncertainty.topk(num_uncertain, dim=1, sorted=False).indices
    picked = torch.gather(candidates, 1, chosen[..., None].expand(-1, -1, 2))
    return torch.cat([picked, uniform((rows, num_points - num_uncertain, 2), logits.device)], 1)


def uniform(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """U[0, 1) float32 numbers. On the CPU drawn by NumPy's PCG64 (2-3x faster than torch's CPU
    generator for the millions of point coordinates a step needs), seeded from torch's generator,
    so ``torch.manual_seed`` still makes a run repeatable."""
    if device.type != "cpu":
        return torch.rand(shape, device=device)
    seed = int(torch.randint(0, 2**62, (1,)))
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))
