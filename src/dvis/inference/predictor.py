"""``VideoPredictor``: DVIS on video files, frame folders and frame lists, in bounded memory.

    predictor = VideoPredictor.from_pretrained("synthetic-demo", mode="offline")
    instances = predictor("clip.mp4")             # TrackedInstances (VIS) / VPSResult / VSSResult
    for frame in predictor.stream("clip.mp4"):    # online: one StreamFrame per frame, as decoded
        print(frame.index, frame.ids, frame.labels)
    predictor.categories.ids, predictor.categories.names   # class index -> dataset id / name

Calls go through the streaming engine (:mod:`dvis.inference.engine`, which runs the pipeline of
:mod:`dvis.modeling.pipeline`): per-frame arrays are spilled to a temporary folder (``spill_dir``,
default the system temp dir) instead of being kept in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dvis.data.video import VideoSource
from dvis.errors import InputError
from dvis.inference.categories import Categories, model_categories
from dvis.inference.engine import Progress, analyse_video, frame_windows, prepare_window
from dvis.inference.inputs import open_frames
from dvis.inference.registry import check_overrides, load_model, locate_model
from dvis.inference.results import StreamFrame, TrackedInstances, select_entries
from dvis.inference.spill import SpillFolder
from dvis.modeling.dvis import DVIS, InferenceConfig
from dvis.modeling.pipeline import VideoAnalysis, step_window
from dvis.modeling.postprocess import upsample_masks
from dvis.modeling.segmenter import Mask2FormerSegmenter


def frames_of(video) -> Iterable[np.ndarray]:
    """A path, frame folder or list of image paths -> a VideoSource (a frame folder or list ends at
    its first undecodable frame, with a warning); a VideoSource, a list/array of (H, W, 3) uint8
    frames, a (T, H, W, 3) array/tensor or an iterator of frames is used as it is."""
    if isinstance(video, (VideoSource, Iterator)):
        return video
    if isinstance(video, (np.ndarray, Tensor)):
        if video.ndim != 4 or video.shape[-1] != 3:
            raise InputError(f"a video array must be (T, H, W, 3) uint8 RGB, got {tuple(video.shape)}")
        return video
    if isinstance(video, (list, tuple)) and video and isinstance(video[0], (np.ndarray, Tensor)):
        return video
    if isinstance(video, (list, tuple)) and not video:
        raise InputError("the video has zero frames (empty list)")
    return open_frames(video)


ONLINE_MODES = ("online", "minvis")


def vps_warning(config: InferenceConfig) -> str | None:
    """Why task ``vps`` may not give what a user expects from ``config`` (None if it will)."""
    if config.task == "vps" and not config.thing_classes:
        return ("task vps with a model that has no thing classes (inference.thing_classes is empty): "
                "every class is treated as stuff, so all objects of a class merge into one segment; set inference.thing_classes in "
                "the model's config.yaml (thing_classes=[...] in Python) or use task vis")
    return None


class VideoPredictor:
    """A loaded DVIS model plus inference options (any :class:`InferenceConfig` field).

    ``categories``: dataset category id and name per class index (:mod:`dvis.inference.categories`;
    ``from_pretrained`` takes them from the model folder's ``classes.json`` or the release preset,
    otherwise class k is id k + 1), e.g. for ``instances.to_ytvis(video_id, predictor.categories.ids)``.
    ``read_ahead``: frames decoded ahead in a background thread while the model runs (None: 8, at
    most one window; 0: none). ``compile``: run the segmenter's network through ``torch.compile`` (a
    :class:`~dvis.modeling.segmenter.Mask2FormerSegmenter` only; compiles on the first window of
    each size, pays off on long videos).
    """

    def __init__(self, model: DVIS, spill_dir: str | Path | None = None, spill_dtype: str = "float32",
                 categories: Categories | None = None, read_ahead: int | None = None, compile: bool = False,
                 **overrides) -> None:
        self.model = model.eval()
        self.read_ahead = read_ahead
        if compile:
            if not isinstance(model.segmenter, Mask2FormerSegmenter):
                raise InputError(f"compile=True needs a Mask2FormerSegmenter, got {type(model.segmenter).__name__}")
            model.segmenter.compiled = True
        self.config = dataclasses.replace(model.config.inference, **check_overrides(overrides))
        self.config.validate()
        self.spill_dir, self.spill_dtype = spill_dir, spill_dtype
        num_classes = model.config.segmenter.num_classes
        self.categories = categories if categories is not None else Categories.default(num_classes)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, device: str = "auto", weights: str | Path | None = None,
                        spill_dir: str | Path | None = None, spill_dtype: str = "float32",
                        read_ahead: int | None = None, compile: bool = False, **overrides) -> "VideoPredictor":
        """A registered name, a model folder, or a release preset name with ``weights=FILE.pth``."""
        model = load_model(name_or_dir, weights=weights, device=device)
        categories = model_categories(locate_model(name_or_dir, weights), model.config.segmenter.num_classes)
        return cls(model, spill_dir=spill_dir, spill_dtype=spill_dtype, categories=categories,
                   read_ahead=read_ahead, compile=compile, **overrides)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def options(self, **overrides) -> InferenceConfig:
        config = dataclasses.replace(self.config, **check_overrides(overrides))
        config.validate()
        self.model.check_mode(config.mode)
        return config

    # ----------------------------------------------------------------------------- whole video
    @contextlib.contextmanager
    def analyse(self, video, progress: Progress | None = None, **overrides) -> Iterator[VideoAnalysis]:
        """Pass 1 over ``video``; yields a :class:`VideoAnalysis` whose spills live until the block ends."""
        config = self.options(**overrides)
        with SpillFolder(self.spill_dir, self.spill_dtype) as spills:
            yield analyse_video(self.model, frames_of(video), config, spills, progress, self.read_ahead)

    def __call__(self, video, progress: Progress | None = None, score_threshold: float = 0.0,
                 one_class_per_track: bool = False, **overrides):
        """Segment and track a whole video.

        Returns :class:`TrackedInstances` (task ``vis``; masks as one RLE per frame),
        :class:`VPSResult` or :class:`VSSResult` (tasks ``vps`` / ``vss``; (T, H, W) maps in memory).
        VIS keeps the top ``max_num`` (query, class) pairs with score >= ``score_threshold``;
        ``one_class_per_track``: only each track's best pair (so one class per track id).
        """
        config = self.options(**overrides)
        warning = vps_warning(config)
        if warning:
            warnings.warn(warning, UserWarning, stacklevel=2)
        with self.analyse(video, progress, **overrides) as analysis:
            task = analysis.config.task
            if task == "vis":
                instances = None
                for _, chunk in analysis.vis_chunks():
                    if instances is None:
                        keep = torch.as_tensor(select_entries(chunk.scores, chunk.ids, score_threshold,
                                                              one_class_per_track), dtype=torch.long)
                        instances = TrackedInstances.empty_like(chunk, analysis.output_size, keep)
                    instances.add_frames(chunk.masks[keep])
                return instances
            return analysis.result()

    # --------------------------------------------------------------------------------- stream
    def stream_mode(self, mode: str | None = None) -> str:
        """The mode :meth:`stream` runs in: ``mode`` if given, else the predictor's mode if it is
        online or minvis, else ``"online"`` for a model with a tracker and ``"minvis"`` without."""
        if mode is not None:
            return mode
        if self.config.mode in ONLINE_MODES:
            return self.config.mode
        return "online" if self.model.tracker is not None else "minvis"

    @torch.no_grad()
    def stream(self, video, window: int | None = None, score_threshold: float = 0.3, mode: str | None = None,
               **overrides) -> Iterator[StreamFrame]:
        """Online/MinVIS: one :class:`StreamFrame` per frame, produced after each ``window`` frames.

        ``window`` (default: ``window_size``, as the whole-video call uses): frames decoded and
        segmented per step; the results do not depend on it. ``window=1`` gives each frame as soon
        as it is decoded but costs one segmenter and tracker call per frame, whose fixed overhead
        made streaming 2-9x slower than the whole-video call when 1 was the default.

        ``mode``: see :meth:`stream_mode` (an offline model streams with its tracker); an explicit
        offline mode raises ``InputError``.

        Per track (query slot) the class so far is the best non-background class of the softmax of
        the tracker's class logits averaged over the frames seen so far; a track is reported in a
        frame when that probability is >= ``score_threshold``, it is among the ``max_num`` best,
        and its mask is not empty. Memory does not grow with the number of frames.
        """
        config = self.options(mode=self.stream_mode(mode), **overrides)
        if config.mode not in ONLINE_MODES:
            raise InputError(f"stream() runs online: mode must be 'online' or 'minvis', got {config.mode!r} "
                             "(offline modes need the whole video: call the predictor instead)")
        window = config.window_size if window is None else window
        if window < 1:
            raise InputError(f"window must be >= 1, got {window}")
        logit_sum, seen, state = None, 0, None
        for frames in frame_windows(frames_of(video), window):
            pixel_values, resized = prepare_window(self.model, frames, config)
            out, state = step_window(self.model, pixel_values, config.mode, state, precision=config.precision)
            output_size = frames[0].shape[:2]
            for t in range(len(frames)):
                frame_sum = out.logits[0, t].double()
                logit_sum = frame_sum if logit_sum is None else logit_sum + frame_sum
                seen += 1
                probs = F.softmax((logit_sum / seen).float(), dim=-1)
                yield _stream_frame(seen - 1, probs, out.masks[0, t], resized, output_size, config.max_num,
                                    score_threshold)


def _stream_frame(index: int, probs: Tensor, masks: Tensor, resized, output_size, max_num: int,
                  score_threshold: float) -> StreamFrame:
    """probs (Q, K+1), masks (Q, h, w) mask logits of this frame -> the visible confident tracks."""
    scores, labels = probs[:, :-1].max(-1)
    order = scores.argsort(descending=True)[:max_num]
    order = order[scores[order] >= score_threshold]
    full = upsample_masks(masks[order].unsqueeze(1).float(), resized, tuple(output_size), False)[:, 0] > 0
    visible = full.flatten(1).any(1)
    order, full = order[visible], full[visible]
    return StreamFrame(index, order.cpu(), labels[order].cpu(), scores[order].cpu(), full.cpu(), tuple(output_size))
