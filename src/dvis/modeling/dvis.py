"""The DVIS video model: segmenter + referring tracker + temporal refiner, four inference modes.

Modes (the paper, Sec. 3; the released inference code):

``minvis``       segmenter queries linked by Hungarian matching only (the MinVIS baseline).
``online``       the referring tracker, window by window; one class per object from the
                 tracker's logits averaged over all frames.
``offline``      the tracker over the whole video, then the temporal refiner over the whole
                 video; scores are the elementwise max of refiner and online probabilities.
``semi-online``  the tracker over the whole video, the refiner per clip of ``clip_len`` frames;
                 the refiner's per-clip logits are averaged over frames (each clip weighted by its
                 length), then combined with the online probabilities as in ``offline``.

Tasks: ``vis`` (instances), ``vps`` (panoptic), ``vss`` (semantic); only post-processing differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvis.errors import ConfigError, InputError
from dvis.modeling.fast_path import PRECISIONS
from dvis.modeling.pipeline import MemoryStores, track_windows
from dvis.modeling.postprocess import VISResult, VPSResult, VSSResult
from dvis.modeling.refiner import RefinerConfig, TemporalRefiner
from dvis.modeling.segmenter import Mask2FormerSegmenter, Segmenter, SegmenterConfig, SegmenterOutput, as_float32
from dvis.modeling.tracker import ReferringTracker, TrackerConfig

MODES = ("minvis", "online", "offline", "semi-online")
TASKS = ("vis", "vps", "vss")


@dataclass
class InferenceConfig:
    mode: str = "offline"
    task: str = "vis"
    clip_len: int = 0  # semi-online clip length in frames
    window_size: int = 30  # frames per segmenter call (memory only; results identical)
    max_num: int = 20  # VIS: instances kept per video
    object_mask_threshold: float = 0.8  # VPS
    overlap_threshold: float = 0.8  # VPS
    thing_classes: tuple[int, ...] = ()  # VPS: class indices that are things
    min_size_test: int = 360
    max_size_test: int = 1333
    precision: str = "fp32"  # segmenter: fp32 (exact) | bf16 (fast path, dvis.modeling.fast_path)

    def validate(self) -> None:
        """Raise ConfigError for an unknown mode, task or precision and for sizes below 1."""
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.mode == "semi-online" and self.clip_len < 1:
            raise ConfigError(f"semi-online mode needs clip_len >= 1, got {self.clip_len}")
        if self.window_size < 1:
            raise ConfigError(f"window_size must be >= 1, got {self.window_size}")
        if self.max_num < 1:
            raise ConfigError(f"max_num must be >= 1, got {self.max_num}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass
class DVISConfig:
    segmenter: SegmenterConfig
    tracker: TrackerConfig | None = None  # None: a segmenter-only (MinVIS) model
    refiner: RefinerConfig | None = None  # None: an online model
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def validate(self) -> None:
        """Raise ConfigError for a refiner without a tracker (each section validates itself)."""
        if self.refiner is not None and self.tracker is None:
            raise ConfigError("refiner needs a tracker: set the tracker section too")


class DVIS(nn.Module):
    """Segmenter, referring tracker and temporal refiner with MinVIS/online/offline/semi-online."""

    def __init__(self, config: DVISConfig, segmenter: Segmenter | None = None) -> None:
        """``segmenter``: any :class:`Segmenter`; by default a Mask2Former built from the config."""
        super().__init__()
        self.config = config
        self.segmenter = segmenter if segmenter is not None else Mask2FormerSegmenter(config.segmenter)
        self.tracker = ReferringTracker(config.tracker) if config.tracker is not None else None
        self.refiner = TemporalRefiner(config.refiner) if config.refiner is not None else None
        if self.refiner is not None and self.tracker is None:
            raise InputError("a refiner needs a tracker: set config.tracker")

    # ------------------------------------------------------------ pipeline
    def check_mode(self, mode: str) -> None:
        if mode in ("online", "offline", "semi-online") and self.tracker is None:
            raise InputError(f"mode {mode!r} needs a tracker; this model has only a segmenter (use mode='minvis')")
        if mode in ("offline", "semi-online") and self.refiner is None:
            raise InputError(f"mode {mode!r} needs a refiner; this is an online model (use mode='online' or 'minvis')")

    def segment(self, frames: Tensor, precision: str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """frames (B, t, 3, H, W) normalised+padded -> per-frame embeds, mask features, logits, masks.

        Returns (B, t, Q, C), (B, t, C_mask, h, w), (B, t, Q, K+1), (B, t, Q, h, w), float32.
        ``precision``: the segmenter's ``"fp32"`` or ``"bf16"``; None: the segmenter's own setting.
        """
        batch, frames_per_video = frames.shape[:2]
        out = run_segmenter(self.segmenter, frames.flatten(0, 1), precision)

        def per_video(x: Tensor) -> Tensor:
            return x.view(batch, frames_per_video, *x.shape[1:])

        return per_video(out.pred_embds), per_video(out.mask_features), per_video(out.pred_logits), per_video(out.pred_masks)

    @property
    def matching(self) -> str:
        return self.config.tracker.matching if self.config.tracker is not None else "paper"

    # ------------------------------------------------------------- public
    @torch.no_grad()
    def forward(
        self,
        videos: list[Tensor] | Tensor,
        output_sizes: list[tuple[int, int]] | None = None,
        **overrides,
    ) -> list[VISResult | VPSResult | VSSResult]:
        """Segment and track a batch of equally long videos, all in memory.

        The videos go through the segmenter and tracker together (padded to one size), window by
        window; refinement and post-processing are per video. Same steps as the streaming
        predictor (:mod:`dvis.modeling.pipeline`), with the per-frame arrays kept as tensors.

        videos:       list of B tensors (T, 3, h_i, w_i) uint8 RGB, already resized to the test
                      size (see :func:`dvis.inference.transforms.resize_video`), or one (B, T, 3, h, w).
        output_sizes: per video (H, W) to return masks at (default: the input size).
        overrides:    any :class:`InferenceConfig` field (mode, task, clip_len, max_num, ...).
        """
        config = replace(self.config.inference, **overrides)
        config.validate()
        self.check_mode(config.mode)
        videos = list(videos)
        if not videos:
            raise InputError("no videos given")
        pixel_values, resized_sizes = self.preprocess(videos)
        output_sizes = list(output_sizes) if output_sizes is not None else resized_sizes
        if len(output_sizes) != len(videos):
            raise InputError(f"got {len(output_sizes)} output sizes for {len(videos)} videos")
        window = config.window_size
        windows = (pixel_values[:, start:start + window] for start in range(0, pixel_values.shape[1], window))
        records = track_windows(self, windows, config, [MemoryStores() for _ in videos])
        return [record.analyse(self, config, resized_sizes[b], tuple(output_sizes[b])).result()
                for b, record in enumerate(records)]

    def preprocess(self, videos: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Normalise, then zero-pad bottom/right to a common multiple of 32 -> (B, T, 3, H, W)."""
        lengths = set()
        for index, video in enumerate(videos):
            if not isinstance(video, Tensor) or video.dim() != 4 or video.shape[1] != 3:
                shape = tuple(video.shape) if isinstance(video, Tensor) else type(video).__name__
                raise InputError(f"video {index} must be a (T, 3, H, W) uint8 RGB tensor, got {shape}")
            if video.shape[0] == 0:
                raise InputError(f"video {index} has no frames")
            check_pixel_values(video, index)
            lengths.add(video.shape[0])
        if len(lengths) > 1:
            raise InputError(f"videos in one batch must have the same number of frames, got {sorted(lengths)}")
        resized = [tuple(v.shape[-2:]) for v in videos]
        device = next(self.parameters()).device
        normalised = [self.segmenter.preprocess(to_device(v, device))[0] for v in videos]
        height = max(x.shape[-2] for x in normalised)
        width = max(x.shape[-1] for x in normalised)
        batch = torch.stack([F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2])) for x in normalised])
        return batch, resized


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``; CPU -> CUDA copies go through pinned memory without blocking the host."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def check_pixel_values(video: Tensor, index: int) -> None:
    """uint8 frames, or float frames in 0..255 without NaN/Inf (InputError naming the frame)."""
    if video.dtype == torch.uint8:
        return
    if not video.is_floating_point():
        raise InputError(f"video {index} must be uint8 (or float 0..255) RGB, got dtype {video.dtype}")
    finite = torch.isfinite(video).flatten(1).all(1)  # (T,)
    if not bool(finite.all()):
        frame = int((~finite).nonzero()[0])
        raise InputError(f"video {index}: frame {frame} has NaN or infinite pixel values")


def run_segmenter(segmenter: Segmenter, pixel_values: Tensor, precision: str | None) -> SegmenterOutput:
    """``segmenter(pixel_values)`` in ``precision``: Mask2FormerSegmenter's own fast path for "bf16";
    any other segmenter under bfloat16 autocast with float32 outputs. None: the segmenter's default."""
    if isinstance(segmenter, Mask2FormerSegmenter):
        return segmenter(pixel_values, precision=precision)
    if precision in (None, "fp32"):
        return segmenter(pixel_values)
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    with torch.autocast(pixel_values.device.type, dtype=torch.bfloat16):
        out = segmenter(pixel_values)
    return as_float32(out)
