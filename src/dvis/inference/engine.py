"""Streaming DVIS inference with host memory independent of the video's length.

The in-memory path (:meth:`dvis.modeling.dvis.DVIS.forward`) keeps every frame's mask logits for
all Q queries. Here a video is read window by window (``window_size`` frames) and:

* pass 1 runs the segmenter and the tracker (or MinVIS matching) window by window with the
  tracker's explicit state, keeps a running float64 sum of the per-frame class logits (Q, K+1)
  and spills per-frame arrays to disk (:mod:`dvis.inference.spill`):

  - ``minvis`` / ``online``: the final mask logits (T, Q, h, w);
  - ``offline`` / ``semi-online``: the segmenter queries and tracker embeddings (T, Q, C, always
    float32) and the mask features (T, C_mask, h, w). After the last frame the refiner runs on the
    whole video (offline: its attention over T x Q embeddings is small) or clip by clip
    (semi-online), and its normed embeddings (T, Q, C) are spilled too.

* pass 2 (:class:`VideoAnalysis`) decides the class table once (top-k for VIS, kept segments
  for VPS) and produces the outputs ``FRAME_CHUNK`` frames at a time, reading the spills back
  (refiner mask logits are recomputed from the spilled mask features in the same
  ``window_size`` windows the in-memory path uses).

With float32 spills the outputs equal the in-memory path's (class probabilities to float
rounding of the mean); float16 spills halve the disk use and may flip pixels whose upsampled
logit is within float16 rounding of the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dvis.errors import DataError, InputError
from dvis.inference.spill import FrameSpill, SpillFolder
from dvis.inference.transforms import resize_video
from dvis.modeling.dvis import DVIS, InferenceConfig, combine_with_online
from dvis.modeling.layers import mask_logits
from dvis.modeling.minvis import minvis_match
from dvis.modeling.postprocess import FRAME_CHUNK, VISResult, upsample_masks, vis_postprocess, vss_postprocess

Progress = Callable[[int], None]


# ----------------------------------------------------------------------------- frame input


def frame_windows(frames: Iterable, window_size: int) -> Iterator[list[np.ndarray]]:
    """Group an iterable of (H, W, 3) uint8 frames into lists of ``window_size`` frames.

    All frames must have the size of the first one (``DataError`` names the frame otherwise).
    """
    window: list[np.ndarray] = []
    first_shape = None
    for index, frame in enumerate(frames):
        frame = frame.numpy() if isinstance(frame, Tensor) else np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(f"frame {index} must be an (H, W, 3) uint8 RGB array, got {frame.shape} {frame.dtype}")
        if first_shape is None:
            first_shape = frame.shape
        elif frame.shape != first_shape:
            raise DataError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]} but frame 0 is "
                            f"{first_shape[1]}x{first_shape[0]}; all frames of a video must have one size")
        window.append(frame)
        if len(window) == window_size:
            yield window
            window = []
    if window:
        yield window


def prepare_window(model: DVIS, window: list[np.ndarray], config: InferenceConfig) -> tuple[Tensor, tuple[int, int]]:
    """Frames -> (pixel_values (1, t, 3, H, W) normalised + padded, resized (h, w))."""
    video = resize_video(window, config.min_size_test, config.max_size_test)
    pixel_values, sizes = model.preprocess([video])
    return pixel_values, sizes[0]


# ----------------------------------------------------------------------------- online step


@dataclass
class WindowOutput:
    """One window of one video: logits (t, Q, K+1), masks (t, Q, h, w) or None, segmenter
    queries (t, Q, C), tracked embeddings (t, Q, C), mask features (t, C_mask, h, w)."""

    logits: Tensor
    masks: Tensor | None
    frame_embeds: Tensor
    track_embeds: Tensor
    mask_features: Tensor


class OnlineTracker:
    """Segmenter + tracker (or MinVIS matching) over consecutive windows of one video."""

    def __init__(self, model: DVIS, mode: str, with_masks: bool, precision: str | None = None) -> None:
        self.model, self.mode, self.with_masks, self.precision = model, mode, with_masks, precision
        self.state = None

    @torch.no_grad()
    def step(self, pixel_values: Tensor) -> WindowOutput:
        embeds, features, seg_logits, seg_masks = self.model.segment(pixel_values, self.precision)
        if self.mode == "minvis":
            out, self.state = minvis_match(embeds, seg_logits, seg_masks if self.with_masks else None,
                                           self.state, self.model.matching)
        else:
            out, self.state = self.model.tracker(embeds, features if self.with_masks else None, self.state)
        masks = out.pred_masks[0] if out.pred_masks is not None else None
        return WindowOutput(out.pred_logits[0], masks, embeds[0], out.pred_embds[0], features[0])


# ----------------------------------------------------------------------------- mask sources


class MaskSource(Protocol):
    num_frames: int

    def read(self, start: int, stop: int) -> Tensor:  # (t, Q, h, w) float32 mask logits
        ...


class SpilledMasks:
    """Mask logits read straight from a spill."""

    def __init__(self, spill: FrameSpill) -> None:
        self.spill, self.num_frames = spill, spill.num_frames

    def read(self, start: int, stop: int) -> Tensor:
        return self.spill.read(start, stop)


class RefinedMasks:
    """Refiner mask logits computed from spilled normed embeddings and mask features.

    Computed ``window`` frames at a time (aligned as in :meth:`TemporalRefiner._masks`); the last
    window is cached so that reading consecutive chunks computes each window once.
    """

    def __init__(self, model: DVIS, normed: FrameSpill, features: FrameSpill, window: int) -> None:
        self.model, self.normed, self.features, self.window = model, normed, features, window
        self.num_frames = normed.num_frames
        self.device = next(model.parameters()).device
        self._cached: tuple[int, Tensor] | None = None

    @torch.no_grad()
    def _window(self, start: int) -> Tensor:
        if self._cached is None or self._cached[0] != start:
            stop = start + self.window
            normed = self.normed.read(start, stop).to(self.device)[None]
            features = self.features.read(start, stop).to(self.device)[None]
            self._cached = (start, mask_logits(self.model.refiner.mask_embed(normed), features)[0])
        return self._cached[1]

    def read(self, start: int, stop: int) -> Tensor:
        parts = []
        for window_start in range(start - start % self.window, stop, self.window):
            block = self._window(window_start)
            parts.append(block[max(start - window_start, 0): stop - window_start])
        return torch.cat(parts)


# ----------------------------------------------------------------------------- analysis


@dataclass
class VideoAnalysis:
    """Pass-1 result of one video: everything needed to produce its outputs frame by frame.

    probs (Q, K+1) class probabilities (offline modes: combined with the online ones),
    masks: mask logits (T, Q, h, w) read lazily, resized_size / output_size (h, w) / (H, W).
    """

    probs: Tensor
    masks: MaskSource
    num_frames: int
    resized_size: tuple[int, int]
    output_size: tuple[int, int]
    config: InferenceConfig

    def _chunks(self) -> Iterator[tuple[int, Tensor]]:
        device = self.probs.device
        for start in range(0, self.num_frames, FRAME_CHUNK):
            stop = min(start + FRAME_CHUNK, self.num_frames)
            yield start, self.masks.read(start, stop).to(device)

    @torch.no_grad()
    def vis_chunks(self, max_num: int | None = None) -> Iterator[tuple[int, VISResult]]:
        """(start, VISResult of frames start..start+t) per chunk; scores/labels/ids equal in every chunk."""
        max_num = self.config.max_num if max_num is None else max_num
        for start, logits in self._chunks():
            yield start, vis_postprocess(self.probs, logits, self.resized_size, self.output_size, max_num)

    @torch.no_grad()
    def vss_chunks(self) -> Iterator[tuple[int, Tensor]]:
        """(start, class index per pixel (t, H, W) int64) per chunk."""
        for start, logits in self._chunks():
            yield start, vss_postprocess(self.probs, logits, self.resized_size, self.output_size).masks

    @torch.no_grad()
    def vps_plan(self) -> "PanopticPlan":
        """Pass over all frames deciding the video's segments (see :class:`PanopticPlan`)."""
        config = self.config
        plan = PanopticPlan.keep_queries(self.probs, config.object_mask_threshold)
        if len(plan.kept):
            for _, logits in self._chunks():
                plan.add_areas(*plan.maps(logits, self.resized_size, self.output_size))
            plan.decide(set(config.thing_classes), config.overlap_threshold)
        return plan

    @torch.no_grad()
    def vps_chunks(self, plan: "PanopticPlan") -> Iterator[tuple[int, Tensor]]:
        """(start, segment id per pixel (t, H, W) int32, 0 = void) per chunk."""
        for start, logits in self._chunks():
            yield start, plan.paint(logits, self.resized_size, self.output_size)


class PanopticPlan:
    """Video panoptic post-processing (SPEC section 5) split into passes over frame chunks.

    Same decisions as :func:`dvis.modeling.postprocess.vps_postprocess`, which needs all frames'
    masks at once: keep queries whose best class is not background with score > threshold; owner
    of a pixel = argmax of score x sigmoid(mask); drop a segment whose owned area / mask area
    (over the whole video) < overlap threshold; stuff segments of one class share an id.
    """

    def __init__(self, kept: Tensor, labels: Tensor, scores: Tensor) -> None:
        self.kept, self.labels, self.scores = kept, labels, scores  # (N,), labels (Q,), (N,1,1,1)
        self.owned = torch.zeros(len(kept), dtype=torch.int64)
        self.mask_area = torch.zeros(len(kept), dtype=torch.int64)
        self.both = torch.zeros(len(kept), dtype=torch.int64)
        self.segment_of: dict[int, int] = {}
        self.segments_infos: list[dict] = []
        self.ids: list[int] = []

    @classmethod
    def keep_queries(cls, probs: Tensor, object_mask_threshold: float) -> "PanopticPlan":
        num_classes = probs.shape[1] - 1
        scores, labels = probs.max(-1)
        kept = ((labels != num_classes) & (scores > object_mask_threshold)).nonzero().flatten()
        return cls(kept, labels, scores[kept].float().view(-1, 1, 1, 1))

    def maps(self, logits: Tensor, resized: tuple[int, int], output: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """logits (t, Q, h, w) -> owner index (t, H, W), mask >= 0.5 (N, t, H, W)."""
        masks = upsample_masks(logits[:, self.kept].transpose(0, 1).float(), resized, output, True)
        return (self.scores * masks).argmax(0), masks >= 0.5

    def add_areas(self, owner: Tensor, above: Tensor) -> None:
        owns = owner.unsqueeze(0) == torch.arange(len(self.kept), device=owner.device).view(-1, 1, 1, 1)
        self.owned += owns.flatten(1).sum(1).cpu()
        self.mask_area += above.flatten(1).sum(1).cpu()
        self.both += (owns & above).flatten(1).sum(1).cpu()

    def decide(self, thing_classes: set[int], overlap_threshold: float) -> None:
        stuff_segment: dict[int, int] = {}
        for k in range(len(self.kept)):
            label = int(self.labels[self.kept[k]])
            if self.owned[k] == 0 or self.mask_area[k] == 0 or self.both[k] == 0:
                continue
            if self.owned[k].item() / self.mask_area[k].item() < overlap_threshold:
                continue
            is_thing = label in thing_classes
            if not is_thing and label in stuff_segment:
                self.segment_of[k] = stuff_segment[label]
                continue
            segment_id = len(self.segments_infos) + 1
            if not is_thing:
                stuff_segment[label] = segment_id
            self.segment_of[k] = segment_id
            self.segments_infos.append({"id": segment_id, "isthing": is_thing, "category_id": label})
            self.ids.append(int(self.kept[k]))

    def paint(self, logits: Tensor, resized: tuple[int, int], output: tuple[int, int]) -> Tensor:
        panoptic = torch.zeros((logits.shape[0], *output), dtype=torch.int32)
        if not self.segment_of:
            return panoptic
        owner, above = self.maps(logits, resized, output)
        for k, segment_id in self.segment_of.items():  # query order: a later query overwrites
            panoptic[((owner == k) & above[k]).cpu()] = segment_id
        return panoptic


# ----------------------------------------------------------------------------- pass 1


def _check_mode(model: DVIS, config: InferenceConfig) -> None:
    config.validate()
    model.check_mode(config.mode)


@torch.no_grad()
def analyse_video(
    model: DVIS,
    frames: Iterable,
    config: InferenceConfig,
    spills: SpillFolder,
    progress: Progress | None = None,
) -> VideoAnalysis:
    """Pass 1 over a stream of (H, W, 3) uint8 frames; see the module docstring."""
    _check_mode(model, config)
    refine = config.mode in ("offline", "semi-online")
    tracker = OnlineTracker(model, config.mode, with_masks=not refine, precision=config.precision)
    logit_sum, num_frames, resized, output = None, 0, None, None
    for window in frame_windows(frames, config.window_size):
        pixel_values, resized = prepare_window(model, window, config)
        output = window[0].shape[:2]
        out = tracker.step(pixel_values)
        window_sum = out.logits.double().sum(0)
        logit_sum = window_sum if logit_sum is None else logit_sum + window_sum
        if refine:
            spills.get("frame_embeds", out.frame_embeds.shape[1:], exact=True).append(out.frame_embeds)
            spills.get("track_embeds", out.track_embeds.shape[1:], exact=True).append(out.track_embeds)
            spills.get("mask_features", out.mask_features.shape[1:]).append(out.mask_features)
        else:
            spills.get("mask_logits", out.masks.shape[1:]).append(out.masks)
        num_frames += len(window)
        if progress is not None:
            progress(len(window))
    if num_frames == 0:
        raise DataError("the video has zero frames")
    online_probs = F.softmax((logit_sum / num_frames).float(), dim=-1)
    if not refine:
        masks = SpilledMasks(spills.spills["mask_logits"])
        return VideoAnalysis(online_probs, masks, num_frames, resized, tuple(output), config)
    clip_len = config.clip_len if config.mode == "semi-online" else num_frames
    refined_probs, normed = refine_clips(model, spills, num_frames, clip_len)
    probs = combine_with_online(refined_probs, online_probs)
    masks = RefinedMasks(model, normed, spills.spills["mask_features"], config.window_size)
    return VideoAnalysis(probs, masks, num_frames, resized, tuple(output), config)


@torch.no_grad()
def refine_clips(model: DVIS, spills: SpillFolder, num_frames: int, clip_len: int) -> tuple[Tensor, FrameSpill]:
    """Run the refiner per clip over the spilled embeddings.

    Returns the class probabilities (Q, K+1) of the per-frame refiner logits averaged over all
    frames, and a spill of the refiner's normed embeddings (T, Q, C).
    """
    device = next(model.parameters()).device
    frame_embeds, track_embeds = spills.spills["frame_embeds"], spills.spills["track_embeds"]
    normed = spills.get("refined_embeds", track_embeds.frame_shape, exact=True)
    logit_sum = None
    for start in range(0, num_frames, clip_len):
        stop = min(start + clip_len, num_frames)
        memory = model.tracker.frame_forward(frame_embeds.read(start, stop).to(device)[None])
        out = model.refiner(track_embeds.read(start, stop).to(device)[None], memory, None)
        clip_sum = out.pred_logits[0].double().sum(0)
        logit_sum = clip_sum if logit_sum is None else logit_sum + clip_sum
        normed.append(out.pred_embds[0])
    return F.softmax((logit_sum / num_frames).float(), dim=-1), normed
