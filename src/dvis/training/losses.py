"""Mask2Former's set loss (SPEC section 6), on transformers' ``Mask2FormerLoss``.

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

import torch
import torch.distributed as dist
from torch import Tensor
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerLoss,
    dice_loss,
    sample_point,
    sigmoid_cross_entropy_loss,
)

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
        if video_class:
            terms = self.tube_mask_terms(masks, targets, matches)
            terms.update(self.loss_labels(logits.float(), [c.classes for c in targets], matches))
            return terms
        frames = masks.shape[1]
        frame_masks = masks.flatten(0, 1).float()  # (B*T, Q, h, w)
        mask_labels = [clip.masks[t] for clip in targets for t in range(frames)]  # (N, H, W) each
        frame_matches = [match for match in matches for _ in range(frames)]
        num_masks = self.average_count(sum(len(clip.classes) for clip in targets) * frames, masks.device)
        terms = self._mask_terms(frame_masks, mask_labels, frame_matches, num_masks)
        classes = [clip.classes for clip in targets for _ in range(frames)]
        terms.update(self.loss_labels(logits.flatten(0, 1).float(), classes, frame_matches))
        return terms

    def tube_mask_terms(self, masks: Tensor, targets: list[ClipTargets], matches: list[Match]) -> dict[str, Tensor]:
        """BCE and dice of matched (query, object) tubes, ``num_points * T`` points per tube.

        masks (B, T, Q, h, w) logits; each target's masks (T, N, H, W). Normalised by the number of
        objects of the batch (averaged over processes).
        """
        frames = masks.shape[1]
        num_masks = self.average_count(sum(len(clip.classes) for clip in targets), masks.device)
        if sum(len(src) for src, _ in matches) == 0:  # nothing to supervise: keep the graph, zero loss
            zero = masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        tubes = tall_image(masks.transpose(1, 2)).float()  # (B, Q, T*h, w)
        pred = torch.cat([tubes[b, src] for b, (src, _) in enumerate(matches)])[:, None]  # (M, 1, T*h, w)
        labels = torch.cat([clip.tube_masks()[tgt] for clip, (_, tgt) in zip(targets, matches)])[:, None]
        with torch.no_grad():
            coords = self.sample_points_using_uncertainty(pred, self.calculate_uncertainty, self.num_points * frames,
                                                          self.oversample_ratio, self.importance_sample_ratio)
            point_labels = sample_point(labels.to(pred), coords, align_corners=False).squeeze(1)
        point_logits = sample_point(pred, coords, align_corners=False).squeeze(1)
        return {"loss_mask": sigmoid_cross_entropy_loss(point_logits, point_labels, num_masks),
                "loss_dice": dice_loss(point_logits, point_labels, num_masks)}

    def _mask_terms(self, masks: Tensor, mask_labels: list[Tensor], matches: list[Match],
                    num_masks: Tensor) -> dict[str, Tensor]:
        if sum(len(src) for src, _ in matches) == 0:  # nothing to supervise: keep the graph, zero loss
            zero = masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        return self.loss_masks(masks, mask_labels, matches, num_masks)

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
        losses: dict[str, Tensor] = {}
        last = len(blocks) - 1
        for index, (logits, masks) in enumerate(blocks):
            matches = fixed if fixed is not None else matcher(logits, masks)
            terms = self.frame_major_terms(logits, masks, targets, matches, video_class)
            suffix = "" if index == last else f"_{index}"
            losses.update({f"{name}{suffix}": value for name, value in terms.items()})
        return losses
