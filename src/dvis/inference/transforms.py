"""Test-time resizing as the release's data mapper does it (detectron2 ``ResizeShortestEdge``).

The short side becomes ``short_side`` with the long side capped at ``max_size``; the new size is
``int(scale * side + 0.5)``; frames are resized with PIL bilinear on uint8 (which antialiases when
downscaling). Normalisation and padding happen inside the model
(:meth:`dvis.modeling.segmenter.Mask2FormerSegmenter.preprocess`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dvis.errors import InputError


def shortest_edge_size(height: int, width: int, short_side: int, max_size: int) -> tuple[int, int]:
    """(height, width) -> resized (height, width), detectron2's rounding."""
    if height <= 0 or width <= 0:
        raise InputError(f"frame size must be positive, got {height}x{width}")
    scale = short_side / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (h, w, 3) uint8 with PIL bilinear."""
    if frame.shape[:2] == tuple(size):
        return frame
    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR))


def resize_video(frames, short_side: int, max_size: int = 1333) -> Tensor:
    """Iterable of (H, W, 3) uint8 RGB frames (numpy or tensor) -> (T, 3, h, w) uint8 tensor."""
    resized = []
    for index, frame in enumerate(frames):
        frame = frame.numpy() if isinstance(frame, Tensor) else np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"frame {index} must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        size = shortest_edge_size(frame.shape[0], frame.shape[1], short_side, max_size)
        resized.append(torch.from_numpy(np.array(resize_frame(frame, size), copy=True)).permute(2, 0, 1))
    if not resized:
        raise InputError("no frames to resize")
    return torch.stack(resized)
