"""The one DVIS inference pipeline: :meth:`DVIS.forward` runs it in memory, the streaming predictor
(:mod:`dvis.inference.predictor`, ``dvis segment``) with per-frame arrays spilled to disk.

Pass 1 (:func:`track_windows`): consecutive windows of ``window_size`` frames of B videos go through
the segmenter and the referring tracker (or MinVIS matching) with the tracker's explicit state
(:func:`step_window`). Per video, a :class:`VideoRecord` keeps a running float64 sum of the
per-frame class logits (Q, K+1) and appends per-frame arrays to frame stores:

- ``minvis`` / ``online``: the final mask logits (T, Q, h, w);
- ``offline`` / ``semi-online``: the segmenter queries and tracker embeddings (T, Q, C, always
  float32) and the mask features (T, C_mask, h, w). After the last frame the refiner runs on the
  whole video (offline) or clip by clip (semi-online) (:func:`refine_clips`), and its normed
  embeddings (T, Q, C) are stored too.

Pass 2 (:class:`VideoAnalysis`) decides the class table once (top-k for VIS, kept segments for
VPS) and produces the outputs ``FRAME_CHUNK`` frames at a time, reading the stores back (refiner
mask logits are computed from the stored mask features ``window_size`` frames at a time,
:class:`RefinedMasks`).

Frame stores: anything with ``get(name, frame_shape, exact) -> FrameStore`` (:class:`StoreFolder`):
:class:`MemoryStores` keeps tensors (``DVIS.forward``); the predictor's spill folder writes files
(``exact``: float32 whatever the folder's dtype). With float32 stores both give the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from dvis.errors import DataError, InputError
from dvis.modeling.layers import mask_logits
from dvis.modeling.matching import PendingMatch
from dvis.modeling.minvis import MinVISState, minvis_match
from dvis.modeling.postprocess import (
    FRAME_CHUNK,
    PanopticPlan,
    VISResult,
    VPSResult,
    VSSResult,
    vis_masks,
    vis_select,
    vss_map,
)
from dvis.modeling.tracker import TrackerState

if TYPE_CHECKING:
    from dvis.modeling.dvis import DVIS, InferenceConfig

REFINED_MODES = ("offline", "semi-online")
TrackState = Union[TrackerState, MinVISState, None]


# ----------------------------------------------------------------------------- frame stores


class FrameStore(Protocol):
    """T frames of one shape, appended in order and read back by frame range."""

    frame_shape: tuple[int, ...]
    num_frames: int

    def append(self, frames: Tensor) -> None:  # (t, *frame_shape)
        ...

    def read(self, start: int, stop: int) -> Tensor:  # (stop - start, *frame_shape) float32
        ...


class StoreFolder(Protocol):
    def get(self, name: str, frame_shape: tuple[int, ...], exact: bool = False) -> FrameStore:
        """The store called ``name``, created on first use; ``exact``: keep float32."""
        ...

    def __getitem__(self, name: str) -> FrameStore:
        """The store called ``name``, already created (KeyError otherwise)."""
        ...


class MemoryStore:
    """A :class:`FrameStore` of tensors, kept on the device they come from."""

    def __init__(self, frame_shape: tuple[int, ...]) -> None:
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.num_frames = 0
        self._parts: list[Tensor] = []

    def append(self, frames: Tensor) -> None:
        """frames (t, *frame_shape) -> kept after the frames already held."""
        if tuple(frames.shape[1:]) != self.frame_shape:
            raise InputError(f"frame store: expected frames (t, {self.frame_shape}), got {tuple(frames.shape)}")
        self._parts.append(frames)
        self.num_frames += len(frames)

    def read(self, start: int, stop: int) -> Tensor:
        """Frames [start, stop) -> (t, *frame_shape)."""
        if len(self._parts) > 1:
            self._parts = [torch.cat(self._parts)]
        if not self._parts:
            return torch.empty((0, *self.frame_shape))
        return self._parts[0][max(0, start):stop]


class MemoryStores:
    """A :class:`StoreFolder` of :class:`MemoryStore`\\ s (the in-memory path of ``DVIS.forward``)."""

    def __init__(self) -> None:
        self.stores: dict[str, MemoryStore] = {}

    def get(self, name: str, frame_shape: tuple[int, ...], exact: bool = False) -> MemoryStore:
        if name not in self.stores:
            self.stores[name] = MemoryStore(frame_shape)
        return self.stores[name]

    def __getitem__(self, name: str) -> MemoryStore:
        return self.stores[name]


# ----------------------------------------------------------------------------- pass 1


@dataclass
class WindowOutput:
    """One window of B videos: logits (B, t, Q, K+1), masks (B, t, Q, h, w) or None, segmenter
    queries (B, t, Q, C), tracked embeddings (B, t, Q, C), mask features (B, t, C_mask, h, w)."""

    logits: Tensor
    masks: Tensor | None
    frame_embeds: Tensor
    track_embeds: Tensor
    mask_features: Tensor


Segmented = tuple[Tensor, Tensor, Tensor, Tensor]  # model.segment's embeds, features, logits, masks


@torch.no_grad()
def step_window(
    model: DVIS,
    pixel_values: Tensor,
    mode: str,
    state: TrackState,
    with_masks: bool = True,
    precision: str | None = None,
) -> tuple[WindowOutput, TrackState]:
    """The next t frames of B videos: segmenter, then the tracker (or MinVIS matching for ``minvis``).

    pixel_values (B, t, 3, H, W) normalised and padded; ``state``: None for the first window, else
    the state this function returned for the previous window. ``with_masks``: compute the tracker's
    (MinVIS: reordered segmenter) mask logits; False where the refiner's masks replace them.
    ``precision``: the segmenter's (see :meth:`DVIS.segment`).
    """
    segmented = model.segment(pixel_values, precision)
    return track_segmented(model, segmented, start_matching(segmented, state), mode, state, with_masks)


def start_matching(segmented: Segmented, state: TrackState) -> PendingMatch:
    """The window's matching costs, on their way to the host (see :class:`PendingMatch`)."""
    return PendingMatch(None if state is None else state.reference, segmented[0])


def track_segmented(
    model: DVIS, segmented: Segmented, match: PendingMatch, mode: str, state: TrackState, with_masks: bool = True
) -> tuple[WindowOutput, TrackState]:
    """Second half of :func:`step_window`: solve the window's matching, then the tracker (or MinVIS)."""
    embeds, features, seg_logits, seg_masks = segmented
    orders = match.orders(model.matching)
    if mode == "minvis":
        out, state = minvis_match(embeds, seg_logits, seg_masks if with_masks else None, state, model.matching, orders)
    else:
        out, state = model.tracker(embeds, features if with_masks else None, state, orders=orders)
    return WindowOutput(out.pred_logits, out.pred_masks, embeds, out.pred_embds, features), state


class VideoRecord:
    """Pass 1 of one video: the running float64 sum of its per-frame class logits (Q, K+1) and its
    per-frame arrays in ``stores`` (see the module docstring)."""

    def __init__(self, stores: StoreFolder, refine: bool) -> None:
        self.stores, self.refine = stores, refine
        self.logit_sum: Tensor | None = None
        self.num_frames = 0

    def add(self, out: WindowOutput, index: int) -> None:
        """Records video ``index`` of the window ``out``."""
        window_sum = out.logits[index].double().sum(0)
        self.logit_sum = window_sum if self.logit_sum is None else self.logit_sum + window_sum
        if self.refine:
            self._append("frame_embeds", out.frame_embeds[index], exact=True)
            self._append("track_embeds", out.track_embeds[index], exact=True)
            self._append("mask_features", out.mask_features[index])
        else:
            self._append("mask_logits", out.masks[index])
        self.num_frames += out.logits.shape[1]

    def _append(self, name: str, frames: Tensor, exact: bool = False) -> None:
        self.stores.get(name, tuple(frames.shape[1:]), exact=exact).append(frames)

    @torch.no_grad()
    def analyse(
        self, model: DVIS, config: InferenceConfig, resized_size: tuple[int, int], output_size: tuple[int, int]
    ) -> VideoAnalysis:
        """After the last window: class probabilities (refined in the offline modes) and mask source."""
        if self.num_frames == 0:
            raise DataError("the video has zero frames")
        online_probs = F.softmax((self.logit_sum / self.num_frames).float(), dim=-1)  # (Q, K+1)
        sizes = (tuple(resized_size), tuple(output_size))
        if not self.refine:
            return VideoAnalysis(online_probs, self.stores["mask_logits"], self.num_frames, *sizes, config)
        track_embeds = self.stores["track_embeds"]
        normed = self.stores.get("refined_embeds", track_embeds.frame_shape, exact=True)
        clip_len = config.clip_len if config.mode == "semi-online" else self.num_frames
        refined_probs = refine_clips(model, self.stores["frame_embeds"], track_embeds, normed, clip_len)
        probs = combine_with_online(refined_probs, online_probs)
        masks = RefinedMasks(model, normed, self.stores["mask_features"], config.window_size)
        return VideoAnalysis(probs, masks, self.num_frames, *sizes, config)


@torch.no_grad()
def track_windows(
    model: DVIS, windows: Iterable[Tensor], config: InferenceConfig, stores: Sequence[StoreFolder],
    overlap: bool | None = None,
) -> list[VideoRecord]:
    """Pass 1 over consecutive windows of pixel values (B, t, 3, H, W) of B = ``len(stores)`` videos.

    Refined modes keep the refiner's inputs and compute no tracker masks; returns one
    :class:`VideoRecord` per video (call :meth:`VideoRecord.analyse` for the refiner and pass 2).

    ``overlap`` (default: on a CUDA device): queue window k+1's segmenter before solving window k's
    matching on the host, so that the Hungarian chain runs while the device segments; the
    segmenter outputs of two windows are then held at once. The results are the same either way.
    """
    refine = config.mode in REFINED_MODES
    records = [VideoRecord(folder, refine) for folder in stores]
    if overlap is None:
        overlap = next(model.parameters()).device.type == "cuda"
    state: TrackState = None
    previous: tuple[Segmented, PendingMatch] | None = None  # segmented, its matching not yet solved

    def finish(previous: tuple[Segmented, PendingMatch], state: TrackState) -> TrackState:
        out, state = track_segmented(model, *previous, config.mode, state, not refine)
        for index, record in enumerate(records):
            record.add(out, index)  # spills copy to the host: a sync, after the matching is solved
        return state

    for pixel_values in windows:
        if pixel_values.shape[0] != len(records):
            raise InputError(f"a window holds {pixel_values.shape[0]} videos, expected {len(records)}")
        if previous is not None and not overlap:
            state, previous = finish(previous, state), None
        segmented = model.segment(pixel_values, config.precision)  # on CUDA queued, not waited for
        if previous is not None:
            state = finish(previous, state)  # its Hungarian runs on the host while the device segments
        previous = segmented, start_matching(segmented, state)
    if previous is not None:
        finish(previous, state)
    return records


@torch.no_grad()
def refine_clips(
    model: DVIS, frame_embeds: FrameStore, track_embeds: FrameStore, normed: FrameStore, clip_len: int
) -> Tensor:
    """The refiner per clip of ``clip_len`` frames (the whole video in ``offline``).

    frame_embeds, track_embeds: stored segmenter queries and tracker embeddings (T, Q, C). Appends
    the refiner's normed embeddings (T, Q, C) to ``normed``; returns the class probabilities
    (Q, K+1) of the per-frame refiner logits averaged over all T frames (each clip weighs its length).
    """
    device = next(model.parameters()).device
    num_frames = track_embeds.num_frames
    logit_sum = None
    for start in range(0, num_frames, clip_len):
        stop = min(start + clip_len, num_frames)
        memory = model.tracker.frame_forward(frame_embeds.read(start, stop).to(device)[None])
        out = model.refiner(track_embeds.read(start, stop).to(device)[None], memory, None)
        clip_sum = out.pred_logits[0].double().sum(0)
        logit_sum = clip_sum if logit_sum is None else logit_sum + clip_sum
        normed.append(out.pred_embds[0])
    return F.softmax((logit_sum / num_frames).float(), dim=-1)


def combine_with_online(refined_probs: Tensor, online_probs: Tensor) -> Tensor:
    """Offline class table: first K columns = elementwise max of refiner and online probabilities.

    refined_probs, online_probs (..., K+1); the no-object column stays the refiner's.
    """
    combined = refined_probs.clone()
    combined[..., :-1] = torch.maximum(refined_probs[..., :-1], online_probs[..., :-1])
    return combined


# ----------------------------------------------------------------------------- mask sources


class MaskSource(Protocol):
    num_frames: int

    def read(self, start: int, stop: int) -> Tensor:  # (t, Q, h, w) float32 mask logits
        ...


class RefinedMasks:
    """Refiner mask logits (T, Q, h, w) from stored normed embeddings (T, Q, C) and mask features
    (T, C_mask, h, w).

    Computed ``window`` frames at a time (windows start at frames 0, window, 2 window, ...); the
    last window is cached so that reading consecutive chunks computes each window once.
    """

    def __init__(self, model: DVIS, normed: FrameStore, features: FrameStore, window: int) -> None:
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


# ----------------------------------------------------------------------------- pass 2


@dataclass
class VideoAnalysis:
    """Pass-1 result of one video: everything needed to produce its outputs chunk by chunk.

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
        scores, labels, queries = vis_select(self.probs, max_num)
        scores, labels, ids = scores.cpu(), labels.cpu(), queries.cpu()
        for start, logits in self._chunks():
            masks = vis_masks(logits, queries, self.resized_size, self.output_size)
            yield start, VISResult(scores, labels, ids, masks, self.output_size)

    @torch.no_grad()
    def vss_chunks(self) -> Iterator[tuple[int, Tensor]]:
        """(start, class index per pixel (t, H, W) int64) per chunk."""
        for start, logits in self._chunks():
            yield start, vss_map(self.probs, logits, self.resized_size, self.output_size)

    @torch.no_grad()
    def vps_plan(self) -> PanopticPlan:
        """Pass over all frames deciding the video's segments (see :class:`PanopticPlan`)."""
        config = self.config
        plan = PanopticPlan.keep_queries(self.probs, config.object_mask_threshold)
        if len(plan.kept):
            for _, logits in self._chunks():
                plan.add_areas(logits, self.resized_size, self.output_size)
            plan.decide(set(config.thing_classes), config.overlap_threshold)
        return plan

    @torch.no_grad()
    def vps_chunks(self, plan: PanopticPlan) -> Iterator[tuple[int, Tensor]]:
        """(start, segment id per pixel (t, H, W) int32, 0 = void) per chunk."""
        for start, logits in self._chunks():
            yield start, plan.paint(logits, self.resized_size, self.output_size)

    def result(self) -> VISResult | VPSResult | VSSResult:
        """The task's result for all T frames at once, masks (N, T, H, W) bool / maps (T, H, W)."""
        size, frames = self.output_size, self.num_frames
        if self.config.task == "vis":
            result = None
            for start, chunk in self.vis_chunks():
                if result is None:
                    masks = torch.empty((len(chunk.ids), frames, *size), dtype=torch.bool)
                    result = VISResult(chunk.scores, chunk.labels, chunk.ids, masks, size)
                result.masks[:, start:start + chunk.masks.shape[1]] = chunk.masks
            return result
        if self.config.task == "vss":
            return VSSResult(self._fill(self.vss_chunks(), torch.int64), size)
        plan = self.vps_plan()
        return VPSResult(self._fill(self.vps_chunks(plan), torch.int32), plan.segments_infos, plan.ids, size)

    def _fill(self, chunks: Iterator[tuple[int, Tensor]], dtype: torch.dtype) -> Tensor:
        """(start, (t, H, W)) chunks -> one (T, H, W) map."""
        maps = torch.empty((self.num_frames, *self.output_size), dtype=dtype)
        for start, chunk in chunks:
            maps[start:start + len(chunk)] = chunk
        return maps
