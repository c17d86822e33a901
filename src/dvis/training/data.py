"""Datasets and the deterministic, resumable order in which training clips are drawn.

Clip order: global clip position ``p`` (0, 1, 2, ... over the whole run) belongs to epoch
``e = p // V`` (V videos) and draws video ``perm_e[p % V]`` where ``perm_e`` is a permutation
seeded by ``(seed, e)``. Its :class:`~dvis.data.clips.ClipDataset` index is ``e * V + video`` so
every clip gets its own random stream. Optimizer step ``s`` of process ``r`` (of W), micro-step
``a`` (of A accumulation steps), clip ``c`` (of C per GPU) takes position
``((s * A + a) * W + r) * C + c``. The data position of a run is therefore its iteration alone,
which makes resume exact and independent of DataLoader workers.

With COCO pseudo videos mixed in (``data.pseudo_videos``), :class:`MixedClipOrder` first assigns
each position to a source (video set or pseudo videos) by weight, still as a pure function of
``(seed, position)``, then draws that source's own :class:`ClipOrder`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dvis.data.augment import ClipAugmentation, RotationSchedule
from dvis.data.clips import ClipDataset, PseudoVideoClipDataset, collate_clips
from dvis.data.coco import CocoImages, MappedCocoImages
from dvis.data.coco_categories import resolve_category_map
from dvis.errors import DataError, InputError
from dvis.training.config import DataConfig

MIX_BLOCK = 1000  # clip positions per block of a MixedClipOrder (config.py checks shares >= 1/MIX_BLOCK)


def _path(data: DataConfig, key: str) -> Path:
    return _resolve(data, key, "data", f"needed for data.format = {data.format!r}")


def _resolve(section, key: str, prefix: str, needed_for: str) -> Path:
    """``section.key`` (relative to ``section.root``), which must exist; errors name ``prefix.key``."""
    value = getattr(section, key)
    if value is None:
        raise DataError(f"config {prefix}.{key} is not set ({needed_for})")
    path = Path(value)
    if section.root is not None and not path.is_absolute():
        path = Path(section.root) / path
    if not path.exists():
        raise DataError(f"config {prefix}.{key}: {path} does not exist")
    return path


def uses_pseudo_videos(data: DataConfig) -> bool:
    """Whether some training clips are pseudo videos (rotated still images)."""
    return data.pseudo_videos is not None or data.format == "coco-pseudo-video"


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
    if data.format == "coco-pseudo-video":
        images = CocoImages(_path(data, "annotations"), _path(data, "image_root"))
        index = images.category_index()
        return MappedCocoImages(images, {cid: cid for cid in index}, index, f"data.annotations ({images.ann_json})")
    from dvis.data.vipseg import VIPSegDataset

    return VIPSegDataset(_path(data, "annotations"), _path(data, "panoptic_root"), _path(data, "image_root"))


def build_pseudo_images(data: DataConfig, videos) -> MappedCocoImages | None:
    """The COCO images of ``data.pseudo_videos`` in the video set's categories (None without it)."""
    pseudo = data.pseudo_videos
    if pseudo is None:
        return None
    needed = "needed for data.pseudo_videos"
    images = CocoImages(_resolve(pseudo, "annotations", "data.pseudo_videos", needed),
                        _resolve(pseudo, "image_root", "data.pseudo_videos", needed))
    key = "data.pseudo_videos.category_map"
    return MappedCocoImages(images, resolve_category_map(pseudo.category_map, key), videos.category_index(), key)


def clip_augmentation(data: DataConfig) -> ClipAugmentation | None:
    aug = data.augmentation
    if aug is None:
        return None
    return ClipAugmentation(
        short_sides=tuple(aug.short_sides), max_size=aug.max_size, flip_prob=aug.flip_prob,
        crop=tuple(aug.crop) if aug.crop is not None else None, crop_prob=aug.crop_prob,
        crop_resize=tuple(aug.crop_resize),
    )


def pseudo_augmentation(data: DataConfig) -> ClipAugmentation | None:
    """data.augmentation with the pseudo videos' long-side cap (``data.pseudo_videos.max_size``)."""
    aug = clip_augmentation(data)
    cap = data.pseudo_videos.max_size if data.pseudo_videos is not None else None
    return aug if aug is None or cap is None else dataclasses.replace(aug, max_size=cap)


def build_clip_dataset(data: DataConfig, videos, seed: int, with_frames: bool = True, pseudo=None) -> Dataset:
    """``with_frames=False``: the frames are not decoded (the segmenter's outputs are cached).
    ``pseudo``: the images of :func:`build_pseudo_images`, mixed in (a :class:`MixedClipDataset`)."""
    if data.format == "coco-pseudo-video":
        return PseudoVideoClipDataset(videos, num_frames=data.num_frames, augmentation=clip_augmentation(data),
                                      rotation=RotationSchedule(), seed=seed)
    clips = ClipDataset(videos, num_frames=data.num_frames, frame_range=data.frame_range,
                        augmentation=clip_augmentation(data), seed=seed, reverse=data.reverse, with_frames=with_frames)
    if pseudo is None:
        return clips
    return MixedClipDataset([clips, PseudoVideoClipDataset(
        pseudo, num_frames=data.num_frames, augmentation=pseudo_augmentation(data), rotation=RotationSchedule(),
        seed=seed)])


def clip_order(data: DataConfig, videos, pseudo, seed: int):
    """The order of :func:`build_clip_dataset`'s clips: a :class:`ClipOrder`, or with pseudo videos
    a :class:`MixedClipOrder` of (video set, pseudo videos) weighted (video_ratio, ratio)."""
    if pseudo is None:
        return ClipOrder(len(videos), seed)
    weights = (data.pseudo_videos.video_ratio, data.pseudo_videos.ratio)
    return MixedClipOrder((len(videos), len(pseudo)), weights, seed)


@dataclass(frozen=True)
class ClipOrder:
    """Maps global clip positions to ClipDataset indices (see the module docstring)."""

    num_videos: int
    seed: int

    def index(self, position: int) -> int:
        epoch, offset = divmod(int(position), self.num_videos)
        perm = _epoch_permutation(self.seed, epoch, self.num_videos)
        return epoch * self.num_videos + int(perm[offset])


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
    """(size,) int64, read-only: epoch ``epoch``'s permutation of ``size`` items."""
    perm = np.random.default_rng([seed, 7919, epoch]).permutation(size)
    perm.flags.writeable = False
    return perm


def block_counts(weights: tuple[float, ...], block: int = MIX_BLOCK) -> tuple[int, ...]:
    """Positions of each source in a block of ``block``: weights split by largest remainder."""
    exact = np.asarray(weights, np.float64) * block / float(sum(weights))
    counts = np.floor(exact).astype(np.int64)
    for s in np.argsort(-(exact - counts), kind="stable")[: block - int(counts.sum())]:
        counts[s] += 1
    return tuple(int(c) for c in counts)


@functools.lru_cache(maxsize=8)
def _block_layout(seed: int, block: int, counts: tuple[int, ...]) -> np.ndarray:
    """(MIX_BLOCK,) source of each position of block ``block``, shuffled; read-only."""
    layout = np.random.default_rng([seed, 7927, block]).permutation(np.repeat(np.arange(len(counts)), counts))
    layout.flags.writeable = False
    return layout


@dataclass(frozen=True)
class MixedClipOrder:
    """Global clip positions -> :class:`MixedClipDataset` indices, S sources mixed by weight.

    Positions come in blocks of ``MIX_BLOCK``; block ``b`` holds exactly ``block_counts(weights)[s]``
    positions of source ``s``, shuffled by a permutation seeded by ``(seed, b)``. The k-th position
    of source ``s`` over the run (``k = b * count_s`` + its rank within the block) takes index ``i``
    = ``ClipOrder(sizes[s], seed).index(k)``, so each source is still drawn epoch by epoch in seeded
    permutations; the returned index is ``i * S + s``. A pure function of ``(seed, position)``.
    """

    sizes: tuple[int, ...]
    weights: tuple[float, ...]
    seed: int

    def __post_init__(self) -> None:
        counts = block_counts(self.weights)
        if min(counts) < 1 or min(self.sizes) < 1:
            raise InputError(f"mixed clip order: sizes {self.sizes} and weights {self.weights} give a source "
                             f"no clip (positions per block of {MIX_BLOCK}: {counts})")
        object.__setattr__(self, "counts", counts)

    def index(self, position: int) -> int:
        block, offset = divmod(int(position), MIX_BLOCK)
        layout = _block_layout(self.seed, block, self.counts)
        source = int(layout[offset])
        k = block * self.counts[source] + int(np.count_nonzero(layout[:offset] == source))
        return ClipOrder(self.sizes[source], self.seed).index(k) * len(self.sizes) + source


class MixedClipDataset(Dataset):
    """Clip datasets side by side: index ``i`` is clip ``i // S`` of source ``i % S`` (S sources);
    the sample gets ``source`` = s (0: the video set, 1: the pseudo videos)."""

    def __init__(self, sources: list[Dataset]) -> None:
        self.sources = list(sources)

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def set_epoch(self, epoch: int) -> None:
        for source in self.sources:
            source.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        source, local = int(index) % len(self.sources), int(index) // len(self.sources)
        sample = self.sources[source][local]
        sample["source"] = source
        return sample


class StepBatchSampler(Sampler[list[int]]):
    """Yields, for every micro-step from ``start_iter`` on, this process's clip indices."""

    def __init__(self, order: ClipOrder | MixedClipOrder, start_iter: int, max_iter: int, accumulation: int,
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


def build_loader(dataset: Dataset, sampler: StepBatchSampler, num_workers: int) -> DataLoader:
    # A private generator: creating the iterator must not consume the global torch RNG (exact resume).
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_clips,
                      generator=torch.Generator().manual_seed(0), persistent_workers=False,
                      prefetch_factor=2 if num_workers > 0 else None)
