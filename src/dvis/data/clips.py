"""Training clips (as the released dataset mappers sample them): frame sampling, one augmentation per clip, masks and ids kept
consistent, as a DataLoader-ready torch Dataset.

Determinism: sample ``i`` of epoch ``e`` uses ``numpy.random.default_rng([seed, e, i])`` and no
global random state, so it is the same whichever worker process draws it (``num_workers`` 0 or
more). Call :meth:`ClipDataset.set_epoch` between epochs (with non-persistent workers).

A sample is a dict::

    frames        (T, 3, H, W) uint8 (float32 in [0, 255] with to_float=True)
    masks         (T, N, H, W) bool    instance n's mask in frame t (all False where absent)
    ids           (N,) int64           dataset instance ids; column n is the same object in every frame
    classes       (N,) int64           contiguous class index (category_index of the dataset)
    present       (T, N) bool          the instance has a non-empty mask in frame t
    frame_ids     (T, N) int64         ids where present, -1 elsewhere (the release's gt_ids)
    frame_indices (T,) int64           frames of the video the clip was taken from
    video_index   int                  index of the video in the dataset
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dvis.data.augment import (
    ClipAugmentation,
    ClipTransform,
    RotationSchedule,
    rotate_image,
    rotate_masks,
)
from dvis.data.ytvis import FrameInstances
from dvis.errors import InputError


def sample_frame_indices(
    length: int, num_frames: int, frame_range: int, rng: np.random.Generator, reverse: bool = False
) -> list[int]:
    """Frame indices of one clip, as the release samples them.

    * ``2 * frame_range + 1 == num_frames``: a contiguous window at a random start (all frames,
      plus random repeats, sorted, when the video is shorter than the clip);
    * otherwise: a random reference frame plus ``num_frames - 1`` frames drawn with replacement
      from the other frames within ``frame_range`` of it, sorted (the reference alone is
      repeated for a one-frame video).

    With ``reverse`` the clip is played backwards with probability 1/2. Differences from the
    release, all deliberate: reversal applies to both branches (the release reverses only
    contiguous windows), the last possible window start is reachable (the release's
    ``randrange(length - num_frames)`` never picks it), and the padded short-video clip is sorted
    (the release's ``sorted`` result is discarded).
    """
    if length < 1 or num_frames < 1 or frame_range < 0:
        raise InputError(f"clip sampling needs length >= 1, num_frames >= 1, frame_range >= 0; "
                         f"got {length}, {num_frames}, {frame_range}")
    if 2 * frame_range + 1 == num_frames:
        if num_frames > length:
            extra = rng.choice(length, num_frames - length)
            indices = sorted(list(range(length)) + extra.tolist())
        else:
            start = int(rng.integers(length - num_frames + 1))
            indices = list(range(start, start + num_frames))
    else:
        ref = int(rng.integers(length))
        window = [t for t in range(max(0, ref - frame_range), min(length, ref + frame_range + 1)) if t != ref]
        others = rng.choice(window, num_frames - 1).tolist() if window else [ref] * (num_frames - 1)
        indices = sorted(others + [ref])
    if reverse and rng.random() < 0.5:
        indices = indices[::-1]
    return [int(t) for t in indices]


class VideoLike(Protocol):
    """A video of a dataset, as :class:`ClipDataset` reads it."""

    height: int
    width: int
    length: int

    def load_frame(self, t: int) -> np.ndarray: ...

    def frame_instances(self, t: int) -> FrameInstances: ...


def assemble_clip(
    frames: Sequence[np.ndarray] | None, instances: Sequence[FrameInstances], category_index: dict[int, int],
) -> dict:
    """Stacks transformed frames (h, w, 3) and per-frame instances into the sample layout.
    Crowd instances are left out; instance columns are ordered by id. ``frames=None`` (no pixels,
    the segmenter's outputs come from a cache): ``frames`` is a zero tensor of the masks' size
    taking no memory (:func:`blank_frames`)."""
    ids = sorted({int(i) for inst in instances for i, c in zip(inst.ids, inst.iscrowd) if not c})
    column = {instance_id: n for n, instance_id in enumerate(ids)}
    length, (height, width) = len(instances), instances[0].masks.shape[-2:]
    masks = np.zeros((length, len(ids), height, width), bool)
    classes = np.full(len(ids), -1, np.int64)
    for t, inst in enumerate(instances):
        for k, instance_id in enumerate(inst.ids):
            if inst.iscrowd[k]:
                continue
            n = column[int(instance_id)]
            masks[t, n] = inst.masks[k]
            classes[n] = category_index[int(inst.category_ids[k])]
    present = masks.reshape(length, len(ids), height * width).any(-1)  # (T, N); N may be 0
    id_row = np.array(ids, np.int64)
    frame_ids = np.where(present, id_row[None, :], -1)
    if frames is None:
        images = blank_frames(length, height, width)
    else:
        images = torch.from_numpy(np.stack([np.ascontiguousarray(f.transpose(2, 0, 1)) for f in frames]))
    return {
        "frames": images,
        "masks": torch.from_numpy(masks),
        "ids": torch.from_numpy(id_row),
        "classes": torch.from_numpy(classes),
        "present": torch.from_numpy(present),
        "frame_ids": torch.from_numpy(frame_ids),
    }


def blank_frames(length: int, height: int, width: int, dtype: torch.dtype = torch.uint8) -> Tensor:
    """(T, 3, H, W) zeros as a broadcast view of one element (stride 0: no memory per clip)."""
    return torch.zeros((), dtype=dtype).expand(length, 3, height, width)


def _transformed(inst: FrameInstances, masks: np.ndarray) -> FrameInstances:
    return FrameInstances(inst.ids, inst.category_ids, inst.iscrowd, masks)


class _SeededDataset(Dataset):
    def __init__(self, dataset, seed: int, samples_per_epoch: int | None, to_float: bool):
        if len(dataset) == 0:
            raise InputError("clip dataset: the underlying dataset has no videos")
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0
        self.samples_per_epoch = samples_per_epoch
        self.to_float = to_float
        self.category_index = dataset.category_index()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch or len(self.dataset)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _finish(self, sample: dict, pixels: bool = True) -> dict:
        if self.to_float:
            frames = sample["frames"]
            length, _, height, width = frames.shape
            # blank frames stay a view (.float() would materialise them)
            sample["frames"] = frames.float() if pixels else blank_frames(length, height, width, torch.float32)
        return sample


class ClipDataset(_SeededDataset):
    """Clips of ``num_frames`` frames from a video dataset (:class:`~dvis.data.ytvis.YTVISDataset`,
    :class:`~dvis.data.vipseg.VIPSegDataset`, or anything with ``len``, ``[i]`` -> video with
    ``length``, ``height``, ``width``, ``load_frame(t)``, ``frame_instances(t)``, and
    ``category_index()``). Sample ``i`` uses video ``i % len(dataset)``.

    ``with_frames=False`` skips decoding the frames (when the segmenter's outputs come from a
    cache): ``frames`` is then zero-filled, of the size the frames would have."""

    def __init__(
        self,
        dataset: Sequence[VideoLike],
        num_frames: int = 5,
        frame_range: int = 2,
        augmentation: ClipAugmentation | None = ClipAugmentation(),
        seed: int = 0,
        reverse: bool = False,
        to_float: bool = False,
        samples_per_epoch: int | None = None,
        with_frames: bool = True,
    ):
        super().__init__(dataset, seed, samples_per_epoch, to_float)
        self.num_frames = num_frames
        self.frame_range = frame_range
        self.augmentation = augmentation
        self.reverse = reverse
        self.with_frames = with_frames

    def __getitem__(self, index: int) -> dict:
        rng = self._rng(index)
        video_index = int(index) % len(self.dataset)
        video = self.dataset[video_index]
        indices = sample_frame_indices(video.length, self.num_frames, self.frame_range, rng, self.reverse)
        transform = self._transform(video, rng)
        instances = [_transformed(inst, transform.masks(inst.masks)) for inst in map(video.frame_instances, indices)]
        frames = [transform.image(video.load_frame(t)) for t in indices] if self.with_frames else None
        sample = assemble_clip(frames, instances, self.category_index)
        sample["frame_indices"] = torch.tensor(indices, dtype=torch.int64)
        sample["video_index"] = video_index
        return self._finish(sample, pixels=self.with_frames)

    def _transform(self, video, rng: np.random.Generator) -> ClipTransform:
        if self.augmentation is None:
            return ClipTransform(None, None, (video.height, video.width), False)
        return self.augmentation.sample(video.height, video.width, rng)


class PseudoVideoClipDataset(_SeededDataset):
    """Clips made from still images (:class:`~dvis.data.coco.CocoImages`), as the release turns
    COCO into videos: one crop/resize/flip per clip, then a per-frame rotation (angles sorted, so
    the image turns steadily). Instance ids are the annotation ids, the same in every frame."""

    def __init__(
        self,
        dataset,
        num_frames: int = 5,
        augmentation: ClipAugmentation | None = ClipAugmentation(),
        rotation: RotationSchedule = RotationSchedule(),
        seed: int = 0,
        to_float: bool = False,
        samples_per_epoch: int | None = None,
    ):
        super().__init__(dataset, seed, samples_per_epoch, to_float)
        self.num_frames = num_frames
        self.augmentation = augmentation
        self.rotation = rotation

    def __getitem__(self, index: int) -> dict:
        rng = self._rng(index)
        image_index = int(index) % len(self.dataset)
        record = self.dataset[image_index]
        image = record.load_frame(0)
        inst = record.frame_instances(0)
        if self.augmentation is None:
            transform = ClipTransform(None, None, image.shape[:2], False)
        else:
            transform = self.augmentation.sample(image.shape[0], image.shape[1], rng)
        base_image, base_masks = transform.image(image), transform.masks(inst.masks)
        angles, centre = self.rotation.sample(self.num_frames, rng)
        frames = [rotate_image(np.ascontiguousarray(base_image), a, centre) for a in angles]
        instances = [_transformed(inst, rotate_masks(np.ascontiguousarray(base_masks), a, centre)) for a in angles]
        sample = assemble_clip(frames, instances, self.category_index)
        sample["frame_indices"] = torch.arange(self.num_frames, dtype=torch.int64)
        sample["video_index"] = image_index
        return self._finish(sample)


def collate_clips(batch: list[dict]) -> list[dict]:
    """DataLoader ``collate_fn``: clips differ in size and instance count, so keep a list."""
    return list(batch)
