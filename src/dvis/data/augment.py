"""Clip-level augmentation: one set of random parameters per clip, applied to every frame.

Order, as the release's training pipeline: optionally (probability ``crop_prob``) resize the
short side to one of ``crop_resize`` and take an absolute-range crop (height and width each
uniform in [min(side, lo), min(side, hi)]); resize the short side to one of ``short_sides``
(long side capped at ``max_size``); horizontal flip with probability ``flip_prob``; for pseudo
videos made from images, a per-frame rotation (see :class:`RotationSchedule`).
Images are resized bilinearly (Pillow), masks by nearest neighbour (pixel-centre sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


def short_side_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """(new_h, new_w) with the short side = ``short`` and the long side at most ``max_size``."""
    scale = short / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) bilinear."""
    if image.shape[:2] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, H, W) bool -> (n, h, w) nearest neighbour, sampling source pixel centres."""
    height, width = masks.shape[-2:]
    if (height, width) == size:
        return masks
    rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64), width - 1)
    return masks[:, rows][:, :, cols]


@dataclass(frozen=True)
class ClipAugmentation:
    """Parameters of the per-clip augmentation (defaults: the released training configs)."""

    short_sides: tuple[int, ...] = (240, 360, 480)
    max_size: int = 1333
    flip_prob: float = 0.5
    crop: tuple[int, int] | None = (384, 600)  # absolute-range crop; None = no crop
    crop_prob: float = 0.5
    crop_resize: tuple[int, ...] = (400, 500, 600)
    crop_max_size: int = 1333

    def sample(self, height: int, width: int, rng: np.random.Generator) -> "ClipTransform":
        """Draws the clip's transform for frames of size (height, width)."""
        pre_size, box = None, None
        h, w = height, width
        if self.crop is not None and rng.random() < self.crop_prob:
            short = int(rng.choice(self.crop_resize))
            pre_size = short_side_size(h, w, short, self.crop_max_size)
            h, w = pre_size
            lo, hi = self.crop
            crop_h = int(rng.integers(min(h, lo), min(h, hi) + 1))
            crop_w = int(rng.integers(min(w, lo), min(w, hi) + 1))
            top = int(rng.integers(h - crop_h + 1))
            left = int(rng.integers(w - crop_w + 1))
            box = (top, left, crop_h, crop_w)
            h, w = crop_h, crop_w
        size = short_side_size(h, w, int(rng.choice(self.short_sides)), self.max_size)
        flip = bool(rng.random() < self.flip_prob)
        return ClipTransform(pre_size, box, size, flip)


@dataclass(frozen=True)
class ClipTransform:
    """The transform of one clip: [resize to ``pre_size`` + crop ``box``] -> resize -> flip."""

    pre_size: tuple[int, int] | None
    box: tuple[int, int, int, int] | None  # top, left, height, width
    size: tuple[int, int]
    flip: bool

    def image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8."""
        if self.pre_size is not None:
            image = resize_image(image, self.pre_size)
            top, left, crop_h, crop_w = self.box
            image = image[top : top + crop_h, left : left + crop_w]
        image = resize_image(np.ascontiguousarray(image), self.size)
        return image[:, ::-1] if self.flip else image

    def masks(self, masks: np.ndarray) -> np.ndarray:
        """(n, H, W) bool -> (n, h, w) bool."""
        if self.pre_size is not None:
            masks = resize_masks(masks, self.pre_size)
            top, left, crop_h, crop_w = self.box
            masks = masks[:, top : top + crop_h, left : left + crop_w]
        masks = resize_masks(masks, self.size)
        return masks[:, :, ::-1] if self.flip else masks


@dataclass(frozen=True)
class RotationSchedule:
    """Pseudo-video motion for a still image, as the release: T angles uniform in ``angle``
    degrees, sorted (reversed with probability 1/2), one per frame, counter-clockwise about a
    centre drawn once per clip in [0.4, 0.6] of the image; the canvas is not expanded."""

    angle: tuple[float, float] = (-15.0, 15.0)
    centre: tuple[float, float] = (0.4, 0.6)

    def sample(self, frames: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float]]:
        angles = np.sort(rng.uniform(self.angle[0], self.angle[1], size=frames))
        if rng.random() < 0.5:
            angles = angles[::-1]
        centre = (float(rng.uniform(*self.centre)), float(rng.uniform(*self.centre)))
        return angles, centre


def rotate_image(image: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    """Rotates (H, W, 3) uint8 by ``angle`` degrees about relative ``centre`` (x, y), bilinear."""
    if angle % 360 == 0:
        return image
    height, width = image.shape[:2]
    pivot = (width * centre[0], height * centre[1])
    return np.asarray(Image.fromarray(image).rotate(angle, Image.BILINEAR, expand=False, center=pivot))


def rotate_masks(masks: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    """Rotates (n, H, W) bool masks like :func:`rotate_image`, nearest neighbour."""
    if angle % 360 == 0 or masks.shape[0] == 0:
        return masks
    height, width = masks.shape[-2:]
    pivot = (width * centre[0], height * centre[1])
    out = [np.asarray(Image.fromarray(m.astype(np.uint8) * 255).rotate(angle, Image.NEAREST, center=pivot)) > 127
           for m in masks]
    return np.stack(out)
