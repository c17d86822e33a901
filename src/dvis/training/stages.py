"""The three training stages as modules whose forward returns the loss terms of a batch.

* :class:`SegmenterStage`: trains the per-frame Mask2Former (every frame an image).
* :class:`TrackerStage`: the segmenter is frozen (or replaced by its cached outputs); trains the
  referring tracker with first-appearance matching.
* :class:`RefinerStage`: segmenter and tracker frozen; trains the temporal refiner with
  video-level tube matching.

Only the trained module is registered as a sub-module (so DDP wraps and synchronises exactly
the trained parameters); frozen modules are held outside the module tree, in eval mode, without
gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvis.modeling.dvis import DVIS
from dvis.training.cache import SegmenterCache
from dvis.training.losses import ClipTargets, DVISLoss
from dvis.training.matchers import match_first_appearance, match_tubes

SIZE_DIVISIBILITY = 32


@dataclass
class Batch:
    """A batch of B clips of T frames on the training device.

    pixel_values (B, T, 3, H, W) normalised and zero-padded (None when cached outputs are used);
    targets: one :class:`ClipTargets` per clip, masks padded to (H, W); video_index (B,) and
    frame_indices (B, T) locate cached segmenter outputs.
    """

    pixel_values: Tensor | None
    targets: list[ClipTargets]
    video_index: list[int]
    frame_indices: Tensor


def _ceil(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def prepare_batch(samples: list[dict], segmenter, device: torch.device, with_pixels: bool) -> Batch:
    """Clip samples (:mod:`dvis.data.clips`) -> a padded :class:`Batch`.

    Every clip is padded at the bottom/right to the batch's largest size, rounded up to a
    multiple of 32 (images after normalisation, as the release; masks with zeros).
    """
    height = _ceil(max(s["frames"].shape[-2] for s in samples), SIZE_DIVISIBILITY)
    width = _ceil(max(s["frames"].shape[-1] for s in samples), SIZE_DIVISIBILITY)
    targets, pixels = [], []
    for sample in samples:
        keep = sample["present"].any(0)  # objects never visible in the clip are not supervised
        masks = sample["masks"][:, keep].to(device=device, dtype=torch.float32)
        pad = (0, width - masks.shape[-1], 0, height - masks.shape[-2])
        targets.append(ClipTargets(
            classes=sample["classes"][keep].to(device),
            masks=F.pad(masks, pad),
            present=sample["present"][:, keep].to(device),
        ))
        if with_pixels:
            normalised, _ = segmenter.preprocess(sample["frames"].to(device))
            pixels.append(F.pad(normalised, (0, width - normalised.shape[-1], 0, height - normalised.shape[-2])))
    return Batch(
        pixel_values=torch.stack(pixels) if with_pixels else None,
        targets=targets,
        video_index=[int(s["video_index"]) for s in samples],
        frame_indices=torch.stack([s["frame_indices"] for s in samples]),
    )


def take_queries(values: Tensor, order: Tensor) -> Tensor:
    """values (B, T, Q, ...), order (B, T, Q) -> values[b, t, order[b, t]] (B, T, Q, ...)."""
    flat = values.flatten(3) if values.dim() > 3 else values.unsqueeze(-1)
    picked = torch.gather(flat, 2, order.unsqueeze(-1).expand(-1, -1, -1, flat.shape[-1]))
    return picked.view(values.shape)


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class FrozenSegmenter:
    """Per-frame outputs of the frozen segmenter, from the network or from the cache."""

    def __init__(self, segmenter: nn.Module, cache: SegmenterCache | None) -> None:
        self.segmenter = freeze(segmenter)
        self.cache = cache

    @torch.no_grad()
    def __call__(self, batch: Batch, device: torch.device) -> dict[str, Tensor]:
        """-> pred_embds (B, T, Q, C), mask_features (B, T, C, h, w), pred_logits, pred_masks."""
        if self.cache is not None:
            clips = [self.cache.lookup(v, f) for v, f in zip(batch.video_index, batch.frame_indices)]
            return {name: torch.stack([c[name] for c in clips]).to(device) for name in clips[0]}
        pixels = batch.pixel_values
        out = self.segmenter(pixels.flatten(0, 1))
        names = ("pred_embds", "mask_features", "pred_logits", "pred_masks")
        return {name: getattr(out, name).view(*pixels.shape[:2], *getattr(out, name).shape[1:]) for name in names}


class SegmenterStage(nn.Module):
    name = "segmenter"
    needs_pixels = True

    def __init__(self, model: DVIS, loss: DVISLoss) -> None:
        super().__init__()
        self.segmenter = model.segmenter
        self.criterion = loss

    def forward(self, batch: Batch, guided: bool = False) -> dict[str, Tensor]:
        del guided  # per-frame matching on the segmenter's own predictions, always
        out = self.segmenter(batch.pixel_values.flatten(0, 1), return_aux=self.criterion.config.deep_supervision)
        mask_labels, class_labels = [], []
        for clip in batch.targets:
            for t in range(clip.num_frames):
                visible = clip.present[t]
                mask_labels.append(clip.masks[t][visible])
                class_labels.append(clip.classes[visible])
        return self.criterion.image_losses(out.pred_logits, out.pred_masks, out.aux_outputs, mask_labels, class_labels)


def _blocks(aux_logits, aux_masks, logits: Tensor, masks: Tensor) -> list[tuple[Tensor, Tensor]]:
    earlier = list(zip(aux_logits, aux_masks)) if aux_logits is not None and aux_masks is not None else []
    return earlier + [(logits, masks)]


class TrackerStage(nn.Module):
    name = "tracker"

    def __init__(self, model: DVIS, loss: DVISLoss, cache: SegmenterCache | None = None) -> None:
        super().__init__()
        self.tracker = model.tracker
        self.criterion = loss
        self.frozen = FrozenSegmenter(model.segmenter, cache)
        self.needs_pixels = cache is None

    def forward(self, batch: Batch, guided: bool = False) -> dict[str, Tensor]:
        device = batch.targets[0].masks.device
        seg = self.frozen(batch, device)
        deep = self.criterion.config.deep_supervision
        out, _ = self.tracker(seg["pred_embds"], seg["mask_features"], None, return_aux=deep)
        guide = None
        if guided:  # the frozen segmenter's predictions, reordered into the tracker's slots
            guide = (take_queries(seg["pred_logits"], out.match_indices),
                     take_queries(seg["pred_masks"], out.match_indices))
        costs, targets = self.criterion.costs, batch.targets

        def matcher(logits: Tensor, masks: Tensor):
            return [match_first_appearance(logits[b], masks[b], c.classes, c.masks, c.present, costs)
                    for b, c in enumerate(targets)]

        blocks = _blocks(out.aux_logits, out.aux_masks, out.pred_logits, out.pred_masks)
        return self.criterion.video_losses(blocks, targets, matcher, guide, video_class=False)


class RefinerStage(nn.Module):
    name = "refiner"

    def __init__(self, model: DVIS, loss: DVISLoss, cache: SegmenterCache | None = None) -> None:
        super().__init__()
        self.refiner = model.refiner
        self.criterion = loss
        self.frozen = FrozenSegmenter(model.segmenter, cache)
        self.tracker = [freeze(model.tracker)]  # a list keeps it out of the module tree
        self.needs_pixels = cache is None

    def forward(self, batch: Batch, guided: bool = False) -> dict[str, Tensor]:
        device = batch.targets[0].masks.device
        seg = self.frozen(batch, device)
        tracker = self.tracker[0]
        with torch.no_grad():
            tracked, _ = tracker(seg["pred_embds"], seg["mask_features"] if guided else None, None)
            memory = tracker.frame_forward(seg["pred_embds"])
        deep = self.criterion.config.deep_supervision
        out = self.refiner(tracked.pred_embds, memory, seg["mask_features"], return_aux=deep)
        guide = (tracked.pred_logits.mean(1), tracked.pred_masks) if guided else None
        costs, targets = self.criterion.costs, batch.targets

        def matcher(logits: Tensor, masks: Tensor):
            return [match_tubes(logits[b], masks[b], c.classes, c.masks, costs) for b, c in enumerate(targets)]

        aux_logits = [a[:, 0] for a in out.aux_logits] if out.aux_logits is not None else None
        blocks = _blocks(aux_logits, out.aux_masks, out.video_logits, out.pred_masks)
        return self.criterion.video_losses(blocks, targets, matcher, guide, video_class=True)


STAGE_CLASSES = {"segmenter": SegmenterStage, "tracker": TrackerStage, "refiner": RefinerStage}
