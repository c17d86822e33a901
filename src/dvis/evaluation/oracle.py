"""Bounds that separate the segmenter's quality from the association's.

* :func:`oracle_tracks` -- *oracle association*: each ground-truth object takes, on every frame
  where it is visible, the segmenter query whose mask overlaps it best (highest IoU; an empty
  mask where no query overlaps it, and where it is not visible). The track gets the object's
  class and, as score, the mean probability the segmenter gave that class on the chosen frames.
  Evaluated like any result, it bounds what a tracker can reach with these per-frame masks.
* :func:`per_frame_split` -- every (video, frame) as a one-frame video, with the segmenter's top
  (query, class) pairs of that frame as detections: the segmenter's per-frame mask AP.

Both work on :class:`FrameOutputs`, the segmenter's per-frame class probabilities and binary
masks at the video's size (``benchmarks/ablations.py`` computes them by running the segmenter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dvis.data.masks import decode
from dvis.evaluation.rle import encode_masks
from dvis.evaluation.ytvis_data import GroundTruth, Track, Video


@dataclass
class FrameOutputs:
    """probs (T, Q, K) class probabilities without no-object; masks (T, Q, H, W) bool."""

    probs: np.ndarray
    masks: np.ndarray


def _gt_masks(track: Track, video: Video) -> list[np.ndarray | None]:
    return [None if rle is None else decode(rle, video.height, video.width) for rle in track.rles]


def oracle_tracks(outputs: FrameOutputs, gt: GroundTruth, video_id) -> list[Track]:
    """One detection per ground-truth object of ``video_id``, built by oracle association."""
    video = gt.videos[video_id]
    class_index = {cat: k for k, cat in enumerate(gt.category_ids)}
    query_areas = outputs.masks.reshape(*outputs.masks.shape[:2], -1).sum(-1)  # (T, Q)
    tracks = []
    for track in (t for t in gt.tracks if t.video_id == video_id):
        chosen = np.zeros((video.length, video.height, video.width), dtype=bool)
        scores = []
        for frame, mask in enumerate(_gt_masks(track, video)):
            if mask is None or not mask.any():
                continue
            inter = (outputs.masks[frame] & mask).reshape(len(query_areas[frame]), -1).sum(-1)
            iou = inter / (query_areas[frame] + mask.sum() - inter)
            best = int(iou.argmax())
            if iou[best] > 0:
                chosen[frame] = outputs.masks[frame, best]
            scores.append(float(outputs.probs[frame, best, class_index[track.category_id]]))
        rles = encode_masks(chosen)
        area = float(np.mean([m.sum() for m in chosen if m.any()] or [0.0]))
        tracks.append(Track(id=len(tracks) + 1, video_id=video_id, category_id=track.category_id, rles=rles,
                            avg_area=area, score=float(np.mean(scores)) if scores else 0.0))
    return tracks


def per_frame_split(gt: GroundTruth, outputs: dict, top_k: int = 10) -> tuple[GroundTruth, list[Track]]:
    """Every (video, frame) as a one-frame video: ground truth and the segmenter's top-k detections.

    outputs: video id -> :class:`FrameOutputs`. Frame videos are named ``"<video id>/<frame>"``.
    """
    videos, gt_tracks, dets = {}, [], []
    for video_id, video in gt.videos.items():
        frame_outputs = outputs[video_id]
        for frame in range(video.length):
            key = f"{video_id}/{frame}"
            videos[key] = Video(key, video.height, video.width, 1)
            for track in (t for t in gt.tracks if t.video_id == video_id and t.rles[frame] is not None):
                mask = decode(track.rles[frame], video.height, video.width)
                if mask is not None and mask.any():
                    gt_tracks.append(Track(len(gt_tracks) + 1, key, track.category_id, [track.rles[frame]],
                                           float(mask.sum()), iscrowd=track.iscrowd, occlusion=track.occlusion))
            probs = frame_outputs.probs[frame]  # (Q, K)
            order = np.argsort(-probs, axis=None, kind="stable")[:top_k]
            for flat in order:
                query, label = divmod(int(flat), probs.shape[1])
                mask = frame_outputs.masks[frame, query]
                dets.append(Track(len(dets) + 1, key, gt.category_ids[label], encode_masks(mask[None]),
                                  float(mask.sum()), score=float(probs[query, label])))
    return GroundTruth(videos, gt.categories, gt_tracks), dets
