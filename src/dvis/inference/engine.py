"""Streaming DVIS inference with host memory independent of the video's length.

The video is read window by window (``window_size`` frames), resized and normalised per window,
and run through the one inference pipeline (:mod:`dvis.modeling.pipeline`, which
:meth:`dvis.modeling.dvis.DVIS.forward` runs in memory) with its per-frame arrays spilled to disk
(:mod:`dvis.inference.spill`). With float32 spills the outputs equal the in-memory path's;
float16 spills halve the disk use and may flip pixels whose upsampled logit is within float16
rounding of the threshold.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
from torch import Tensor

from dvis.data.prefetch import Prefetcher
from dvis.errors import DataError, InputError
from dvis.inference.spill import SpillFolder
from dvis.inference.transforms import resize_video
from dvis.modeling.dvis import DVIS, InferenceConfig
from dvis.modeling.pipeline import VideoAnalysis, track_windows

Progress = Callable[[int], None]
READ_AHEAD = 8  # default frames decoded ahead (decoding is < 1 % of a 480x640 run: docs/model.md)


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


# ----------------------------------------------------------------------------- pass 1


def analyse_video(
    model: DVIS,
    frames: Iterable,
    config: InferenceConfig,
    spills: SpillFolder,
    progress: Progress | None = None,
    read_ahead: int | None = None,
) -> VideoAnalysis:
    """Pass 1 over a stream of (H, W, 3) uint8 frames, spilling to ``spills``; ``progress(n)``
    after every window of n frames. The returned analysis reads the spills (pass 2).

    ``read_ahead``: frames decoded ahead in a background thread while the model runs
    (:class:`~dvis.data.prefetch.Prefetcher`; None: :data:`READ_AHEAD` frames, at most one window;
    0: none, decoding and the model take turns). Each frame read ahead is one more full-size frame
    in memory (24 MB at 4K)."""
    config.validate()
    model.check_mode(config.mode)
    sizes: dict[str, tuple[int, int]] = {}

    def windows(source: Iterable) -> Iterator[Tensor]:
        for window in frame_windows(source, config.window_size):
            pixel_values, sizes["resized"] = prepare_window(model, window, config)
            sizes["output"] = tuple(window[0].shape[:2])
            yield pixel_values
            if progress is not None:
                progress(len(window))

    depth = min(config.window_size, READ_AHEAD) if read_ahead is None else read_ahead
    if isinstance(frames, (list, tuple, np.ndarray, Tensor)):
        depth = 0  # already decoded: a thread would only copy references
    with Prefetcher(frames, depth, name="dvis-decode") as decoded:
        record, = track_windows(model, windows(decoded), config, [spills])
    return record.analyse(model, config, sizes.get("resized"), sizes.get("output"))
