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
    image_size (H, W). Sorted by descending score.

    As YouTube-VIS results do, the entries are the video's top ``max_num`` (query, class) pairs, so
    one track may appear with several labels (each with its own score and the same masks);
    :meth:`one_class_per_track` keeps only each track's best-scoring entry.
    """

    scores: Tensor
    labels: Tensor
    ids: Tensor
    rles: list[list[dict]]
    image_size: tuple[int, int]
    num_frames: int
    task: str = "vis"

    @classmethod
    def empty_like(cls, header, image_size: tuple[int, int], keep: Sequence[int] | None = None) -> "TrackedInstances":
        """No frames yet; the scores, labels and ids of ``header`` (only its entries ``keep``)."""
        index = torch.arange(len(header.scores)) if keep is None else torch.as_tensor(keep, dtype=torch.long)
        return cls(header.scores[index], header.labels[index], header.ids[index], [[] for _ in range(len(index))],
                   tuple(image_size), 0)

    def select(self, keep: Sequence[int]) -> "TrackedInstances":
        """A new result holding only the entries ``keep`` (indices, in that order)."""
        index = torch.as_tensor(list(keep), dtype=torch.long)
        return TrackedInstances(self.scores[index], self.labels[index], self.ids[index],
                                [self.rles[n] for n in index.tolist()], self.image_size, self.num_frames, self.task)

    def one_class_per_track(self) -> "TrackedInstances":
        """Only each track's best-scoring entry: one class per track id."""
        return self.select(best_per_track(self.scores, self.ids))

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


def best_per_track(scores: Tensor, ids: Tensor) -> list[int]:
    """Indices of each track id's best-scoring entry (ties: the earlier one), in descending score.

    scores (N,), ids (N,): a (query, class) pair list such as :class:`TrackedInstances`' entries.
    """
    best: dict[int, int] = {}
    score_list = scores.tolist()
    for n, track in enumerate(ids.tolist()):
        if track not in best or score_list[n] > score_list[best[track]]:
            best[track] = n
    return sorted(best.values(), key=lambda n: (-score_list[n], n))


def select_entries(scores: Tensor, ids: Tensor, score_threshold: float = 0.0,
                   one_class_per_track: bool = False) -> list[int]:
    """Indices of the entries to keep, in descending score: score >= ``score_threshold`` and, with
    ``one_class_per_track``, only each track's best entry (chosen before the threshold applies)."""
    candidates = best_per_track(scores, ids) if one_class_per_track else \
        sorted(range(len(scores)), key=lambda n: (-float(scores[n]), n))
    return [n for n in candidates if float(scores[n]) >= score_threshold]


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
