"""Datasets and the deterministic, resumable order in which training clips are drawn.

Clip order: global clip position ``p`` (0, 1, 2, ... over the whole run) belongs to epoch
``e = p // V`` (V videos) and draws video ``perm_e[p % V]`` where ``perm_e`` is a permutation
seeded by ``(seed, e)``. Its :class:`~dvis.data.clips.ClipDataset` index is ``e * V + video`` so
every clip gets its own random stream. Optimizer step ``s`` of process ``r`` (of W), micro-step
``a`` (of A accumulation steps), clip ``c`` (of C per GPU) takes position
``((s * A + a) * W + r) * C + c``. The data position of a run is therefore its iteration alone,
which makes resume exact and independent of DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from dvis.data.augment import ClipAugmentation
from dvis.data.clips import ClipDataset, collate_clips
from dvis.errors import DataError
from dvis.training.config import DataConfig


def _path(data: DataConfig, key: str) -> Path:
    value = getattr(data, key)
    if value is None:
        raise DataError(f"config data.{key} is not set (needed for data.format = {data.format!r})")
    path = Path(value)
    if data.root is not None and not path.is_absolute():
        path = Path(data.root) / path
    if not path.exists():
        raise DataError(f"config data.{key}: {path} does not exist")
    return path


def ensure_synthetic(data: DataConfig) -> None:
    """Generate the synthetic set into ``data.root`` if the config asks for it and it is absent."""
    if data.synthetic is None:
        return
    if data.root is None:
        raise DataError("config data.synthetic needs data.root (the folder to generate the set into)")
    generate_missing(Path(data.root) / (data.annotations or "annotations.json"), data.synthetic)


def generate_missing(annotations: Path, synthetic) -> None:
    """Generate the synthetic set ``synthetic`` (a SyntheticConfig) beside ``annotations`` unless
    that file exists."""
    if annotations.exists():
        return
    from dvis.data.synthetic import generate

    s = synthetic
    generate(annotations.parent, videos=s.videos, frames=s.frames, seed=s.seed, height=s.height, width=s.width,
             objects=tuple(s.objects), occlusion=s.occlusion)


def build_video_dataset(data: DataConfig):
    """The video dataset named by the config (YouTube-VIS/OVIS JSON or VIPSeg panoptic)."""
    ensure_synthetic(data)
    if data.format == "ytvis":
        from dvis.data.ytvis import YTVISDataset

        return YTVISDataset(_path(data, "annotations"), _path(data, "image_root"))
    from dvis.data.vipseg import VIPSegDataset

    return VIPSegDataset(_path(data, "annotations"), _path(data, "panoptic_root"), _path(data, "image_root"))


def clip_augmentation(data: DataConfig) -> ClipAugmentation | None:
    aug = data.augmentation
    if aug is None:
        return None
    return ClipAugmentation(
        short_sides=tuple(aug.short_sides), max_size=aug.max_size, flip_prob=aug.flip_prob,
        crop=tuple(aug.crop) if aug.crop is not None else None, crop_prob=aug.crop_prob,
        crop_resize=tuple(aug.crop_resize),
    )


def build_clip_dataset(data: DataConfig, videos, seed: int, with_frames: bool = True) -> ClipDataset:
    """``with_frames=False``: the frames are not decoded (the segmenter's outputs are cached)."""
    return ClipDataset(videos, num_frames=data.num_frames, frame_range=data.frame_range,
                       augmentation=clip_augmentation(data), seed=seed, reverse=data.reverse, with_frames=with_frames)


@dataclass(frozen=True)
class ClipOrder:
    """Maps global clip positions to ClipDataset indices (see the module docstring)."""

    num_videos: int
    seed: int

    def index(self, position: int) -> int:
        epoch, offset = divmod(int(position), self.num_videos)
        perm = np.random.default_rng([self.seed, 7919, epoch]).permutation(self.num_videos)
        return epoch * self.num_videos + int(perm[offset])


class StepBatchSampler(Sampler[list[int]]):
    """Yields, for every micro-step from ``start_iter`` on, this process's clip indices."""

    def __init__(self, order: ClipOrder, start_iter: int, max_iter: int, accumulation: int,
                 world_size: int, rank: int, clips_per_gpu: int) -> None:
        self.order = order
        self.start_iter, self.max_iter = start_iter, max_iter
        self.accumulation, self.world_size = accumulation, world_size
        self.rank, self.clips_per_gpu = rank, clips_per_gpu

    def positions(self, step: int, micro: int) -> list[int]:
        base = ((step * self.accumulation + micro) * self.world_size + self.rank) * self.clips_per_gpu
        return list(range(base, base + self.clips_per_gpu))

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_iter, self.max_iter):
            for micro in range(self.accumulation):
                yield [self.order.index(p) for p in self.positions(step, micro)]

    def __len__(self) -> int:
        return max(0, self.max_iter - self.start_iter) * self.accumulation


def build_loader(dataset: ClipDataset, sampler: StepBatchSampler, num_workers: int) -> DataLoader:
    # A private generator: creating the iterator must not consume the global torch RNG (exact resume).
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_clips,
                      generator=torch.Generator().manual_seed(0), persistent_workers=False,
                      prefetch_factor=2 if num_workers > 0 else None)
