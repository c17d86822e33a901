"""What the predictor returns: tracked instances with one RLE per frame, and per-frame stream items."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from pycocotools import mask as mask_api
from torch import Tensor

from dvis.evaluation.rle import encode_masks


@dataclass
class TrackedInstances:
    """VIS result of one video, masks kept compressed.

    scores (N,) float, labels (N,) class index 0..K-1, ids (N,) track id (the query slot; the same
    object in every frame), rles: N lists of T compressed RLEs (pycocotools, ``str`` counts),
    image_size (H, W). Sorted by descending score; one track may appear with several labels.
    """

    scores: Tensor
    labels: Tensor
    ids: Tensor
    rles: list[list[dict]]
    image_size: tuple[int, int]
    num_frames: int
    task: str = "vis"

    @classmethod
    def empty_like(cls, header, image_size: tuple[int, int]) -> "TrackedInstances":
        return cls(header.scores, header.labels, header.ids, [[] for _ in range(len(header.scores))],
                   tuple(image_size), 0)

    def add_frames(self, masks: Tensor) -> None:
        """masks (N, t, H, W) bool of the next t frames -> appended as RLEs."""
        for track_rles, track_masks in zip(self.rles, masks.numpy()):
            track_rles.extend(encode_masks(track_masks))
        self.num_frames += masks.shape[1]

    def frame_masks(self, t: int) -> Tensor:
        """(N, H, W) bool masks of frame t."""
        if not self.rles:
            return torch.zeros((0, *self.image_size), dtype=torch.bool)
        decoded = [mask_api.decode(track[t]) for track in self.rles]
        return torch.from_numpy(np.stack(decoded).astype(bool))

    @property
    def masks(self) -> Tensor:
        """(N, T, H, W) bool, decoded on demand (T x H x W bytes per instance)."""
        out = torch.zeros((len(self.rles), self.num_frames, *self.image_size), dtype=torch.bool)
        for t in range(self.num_frames):
            out[:, t] = self.frame_masks(t)
        return out

    def to_ytvis(self, video_id, category_ids: Sequence[int] | None = None, **extra) -> list[dict]:
        """YouTube-VIS results entries; ``category_ids[label]`` (default label + 1) is the category.

        ``extra`` keys (e.g. ``video_name``) are added to each entry; evaluators ignore them.
        """
        entries = []
        for score, label, track_id, track_rles in zip(self.scores.tolist(), self.labels.tolist(),
                                                       self.ids.tolist(), self.rles):
            category = category_ids[label] if category_ids is not None else label + 1
            entries.append({"video_id": video_id, "category_id": int(category), "score": float(score),
                            "segmentations": track_rles, "track_id": int(track_id), **extra})
        return entries


@dataclass
class StreamFrame:
    """One frame of :meth:`VideoPredictor.stream`: the tracks visible in frame ``index``.

    ids (n,) track ids, labels (n,) the class so far (best class of the running mean of the
    tracker's per-frame class probabilities), scores (n,) its probability, masks (n, H, W) bool.
    """

    index: int
    ids: Tensor
    labels: Tensor
    scores: Tensor
    masks: Tensor
    image_size: tuple[int, int] = field(default=(0, 0))
