"""YouTube-VIS / OVIS video instance segmentation AP and AR, as the public ``YTVOSeval`` computes.

Statistics (``summarize()`` order): AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm,
ARl, plus per-category AP (IoU .50:.95, all areas, 100 detections) and the OVIS-style occlusion
split AP_light / AP_medium / AP_heavy (see :mod:`dvis.evaluation.occlusion`).

Reproduced behaviour of the public code (see docs/evaluation.md):

* IoU of two tracks = sum over frames of |d & g| / sum over frames of |d | g|; a frame where
  only one side has a mask adds to the union only, null/null frames add nothing, an empty
  union gives 0; frame lists of different lengths pair up to the shorter one. Crowd ground truth uses this same IoU (not intersection-over-detection).
* Per (video, category): detections sorted by descending score (stable), at most 100 kept
  before matching; maxDets 1/10/100 truncate those per (video, category) afterwards.
* Greedy matching per IoU threshold (``np.linspace(.5, .95, 10)``): a detection takes the
  best ground truth with IoU >= threshold, equal IoUs go to the later ground truth; ignored
  ground truth (crowd / out of range) is sorted last and only taken when no regular one
  matched; a crowd object can absorb any number of detections.
* A detection "matched" to a ground truth whose id is 0 counts as unmatched (the public code
  stores the ground-truth id as the match flag).
* Area ranges use each object's mean non-null, non-zero per-frame area (ground truth: its
  ``areas`` field; detections: their masks), limits inclusive; unmatched detections outside
  the range are ignored.
* Categories without non-ignored ground truth get -1 and are left out of every mean.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from dvis.evaluation import rle as rle_ops
from dvis.evaluation.occlusion import LEVELS
from dvis.evaluation.ytvis_data import GroundTruth, Track

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {"all": (0.0, 1e5 ** 2), "small": (0.0, 128.0 ** 2), "medium": (128.0 ** 2, 256.0 ** 2),
               "large": (256.0 ** 2, 1e5 ** 2)}
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass(frozen=True)
class Range:
    """A subset of objects: an area range, or an occlusion level (with area range "all")."""

    name: str
    area: tuple
    occlusion: str | None = None


RANGES = tuple(Range(name, area) for name, area in AREA_RANGES.items()) + tuple(
    Range(level, AREA_RANGES["all"], level) for level in LEVELS)


@dataclass
class VideoCategoryMatch:
    """Matching of one (video, category) within one range; detections in score order."""

    scores: np.ndarray  # (D,)
    matched: np.ndarray  # (T, D) bool
    det_ignore: np.ndarray  # (T, D) bool
    gt_ignore: np.ndarray  # (G,) bool
    matched_gt: np.ndarray  # (T, D) object: id of the matched ground truth, 0 = none


# ----------------------------------------------------------------------------- IoU


def _present(tracks: list[Track], frame: int) -> tuple[list[int], list[dict]]:
    """Indices and RLEs of the tracks that have a mask on ``frame`` (shorter tracks have none)."""
    idx = [i for i, t in enumerate(tracks) if frame < len(t.rles) and t.rles[frame] is not None]
    return idx, [tracks[i].rles[frame] for i in idx]


def _tube_iou_matrix(dets: list[Track], gts: list[Track]) -> np.ndarray:
    """Spatio-temporal IoU (D, G) of the tracks of one video.

    A pair sums over its first min(len(d), len(g)) frames, as the public code's ``zip`` of the two
    frame lists: frames past the shorter list add neither to the intersection nor to the union.
    """
    inter = np.zeros((len(dets), len(gts)))
    if not dets or not gts:
        return inter
    num_frames = max(len(t.rles) for t in dets + gts)
    d_area = np.zeros((len(dets), num_frames + 1))  # column f + 1: area on frame f
    g_area = np.zeros((len(gts), num_frames + 1))
    for f in range(num_frames):
        d_idx, d_rles = _present(dets, f)
        g_idx, g_rles = _present(gts, f)
        d_area[d_idx, f + 1] = rle_ops.areas(d_rles)
        g_area[g_idx, f + 1] = rle_ops.areas(g_rles)
        if d_idx and g_idx:
            inter[np.ix_(d_idx, g_idx)] += rle_ops.intersections(
                d_rles, g_rles, d_area[d_idx, f + 1], g_area[g_idx, f + 1])
    pair_frames = np.minimum.outer([len(t.rles) for t in dets], [len(t.rles) for t in gts])
    d_total = np.cumsum(d_area, axis=1)[np.arange(len(dets))[:, None], pair_frames]
    g_total = np.cumsum(g_area, axis=1)[np.arange(len(gts))[None, :], pair_frames]
    union = d_total + g_total - inter
    safe = np.where(union > 0, union, 1.0)
    return np.where(union > 0, inter / safe, 0.0)


# ----------------------------------------------------------------------------- matching


def _out_of_range(values: np.ndarray, area: tuple) -> np.ndarray:
    return (values < area[0]) | (values > area[1])


def match_video_category(ious: np.ndarray, dets: list[Track], gts: list[Track], rng: Range,
                         iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> VideoCategoryMatch:
    """Greedy matching of score-sorted ``dets`` against ``gts`` (ious (D, G)) for every threshold."""
    gt_area = np.array([g.avg_area for g in gts], dtype=np.float64)
    gt_ignore = np.array([g.iscrowd for g in gts], dtype=bool) | _out_of_range(gt_area, rng.area)
    if rng.occlusion is not None:
        gt_ignore |= np.array([g.occlusion != rng.occlusion for g in gts], dtype=bool)
    order = np.argsort(gt_ignore, kind="mergesort")
    gt_ignore = gt_ignore[order]
    crowd = [gts[j].iscrowd for j in order]
    gt_ids = [gts[j].id for j in order]
    ious = ious[:, order] if ious.size else ious
    num_t, num_d, num_g = len(iou_thresholds), len(dets), len(gts)
    det_gt = np.zeros((num_t, num_d), dtype=object)  # matched gt id, 0 = none
    det_ignore = np.zeros((num_t, num_d), dtype=bool)
    for t_idx, thr in enumerate(iou_thresholds):
        gt_taken = [False] * num_g
        for d_idx in range(num_d):
            best, m = min(thr, 1 - 1e-10), -1
            row = ious[d_idx]
            for g_idx in range(num_g):
                if gt_taken[g_idx] and not crowd[g_idx]:
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[g_idx]:
                    break
                if row[g_idx] < best:
                    continue
                best, m = row[g_idx], g_idx
            if m == -1:
                continue
            det_ignore[t_idx, d_idx] = gt_ignore[m]
            det_gt[t_idx, d_idx] = gt_ids[m]
            gt_taken[m] = True
    matched = det_gt != 0
    if rng.occlusion is None:
        det_area = np.array([d.avg_area for d in dets], dtype=np.float64)
        det_ignore |= ~matched & _out_of_range(det_area, rng.area)[None, :]
    scores = np.array([d.score for d in dets], dtype=np.float64)
    return VideoCategoryMatch(scores, matched.astype(bool), det_ignore, gt_ignore, det_gt)


# ----------------------------------------------------------------------------- accumulate


def _precision_recall(matches: list[VideoCategoryMatch], max_det: int):
    """Precision (T, R) and recall (T,) over the videos of one category; None if no regular GT."""
    scores = np.concatenate([m.scores[:max_det] for m in matches])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([m.matched[:, :max_det] for m in matches], axis=1)[:, order]
    ignore = np.concatenate([m.det_ignore[:, :max_det] for m in matches], axis=1)[:, order]
    gt_ignore = np.concatenate([m.gt_ignore for m in matches])
    num_pos = np.count_nonzero(gt_ignore == 0)
    if num_pos == 0:
        return None
    tp_sum = np.cumsum(matched & ~ignore, axis=1).astype(np.float64)
    fp_sum = np.cumsum(~matched & ~ignore, axis=1).astype(np.float64)
    num_t, num_d = tp_sum.shape
    precision = np.zeros((num_t, len(RECALL_THRESHOLDS)))
    recall = np.zeros(num_t)
    if num_d == 0:
        return precision, recall
    rc = tp_sum / num_pos
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    recall[:] = rc[:, -1]
    for t in range(num_t):
        idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        valid = idx < num_d
        precision[t, valid] = pr[t, idx[valid]]
    return precision, recall


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


# ----------------------------------------------------------------------------- driver


def _group(tracks: list[Track]) -> dict:
    groups = defaultdict(list)
    for track in tracks:
        groups[track.video_id, track.category_id].append(track)
    return groups


def _top_dets(dets: list[Track], max_det: int) -> list[Track]:
    order = np.argsort([-d.score for d in dets], kind="mergesort")
    return [dets[i] for i in order[:max_det]]


def evaluate_tracks(gt: GroundTruth, dets: list[Track]) -> dict:
    """Full evaluation. Returns ``precision`` (T, R, K, A, M), ``recall`` (T, K, A, M), the stats."""
    cat_ids = gt.category_ids
    gt_groups = _group(gt.tracks)
    det_groups = {key: _top_dets(group, MAX_DETS[-1]) for key, group in _group(dets).items()}
    per_key = {}  # (video, category) -> list over RANGES of VideoCategoryMatch
    for video_id in gt.videos:
        video_keys = [(video_id, c) for c in cat_ids if (video_id, c) in gt_groups or (video_id, c) in det_groups]
        video_dets = [d for key in video_keys for d in det_groups.get(key, [])]
        video_gts = [g for key in video_keys for g in gt_groups.get(key, [])]
        ious = _tube_iou_matrix(video_dets, video_gts)
        d0 = g0 = 0
        for key in video_keys:
            k_dets, k_gts = det_groups.get(key, []), gt_groups.get(key, [])
            sub = ious[d0:d0 + len(k_dets), g0:g0 + len(k_gts)]
            d0, g0 = d0 + len(k_dets), g0 + len(k_gts)
            per_key[key] = [match_video_category(sub, k_dets, k_gts, rng) for rng in RANGES]
    num_t, num_r = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    precision = -np.ones((num_t, num_r, len(cat_ids), len(RANGES), len(MAX_DETS)))
    recall = -np.ones((num_t, len(cat_ids), len(RANGES), len(MAX_DETS)))
    for k, cat in enumerate(cat_ids):
        keys = [(v, cat) for v in gt.videos if (v, cat) in per_key]
        if not keys:
            continue
        for a in range(len(RANGES)):
            matches = [per_key[key][a] for key in keys]
            for m, max_det in enumerate(MAX_DETS):
                result = _precision_recall(matches, max_det)
                if result is not None:
                    precision[:, :, k, a, m], recall[:, k, a, m] = result
    return _summaries(gt, precision, recall)


def _summaries(gt: GroundTruth, precision: np.ndarray, recall: np.ndarray) -> dict:
    area = {name: i for i, name in enumerate(AREA_RANGES)}
    t50 = np.where(IOU_THRESHOLDS == 0.5)[0]
    t75 = np.where(IOU_THRESHOLDS == 0.75)[0]
    ap = lambda a, t=None: _mean_defined(precision[:, :, :, a, 2] if t is None else precision[t][:, :, :, a, 2])  # noqa: E731
    ar = lambda a, m: _mean_defined(recall[:, :, a, m])  # noqa: E731
    stats = [ap(0), ap(0, t50), ap(0, t75), ap(area["small"]), ap(area["medium"]), ap(area["large"]),
             ar(0, 0), ar(0, 1), ar(0, 2), ar(area["small"], 2), ar(area["medium"], 2), ar(area["large"], 2)]
    result = {name: value for name, value in zip(STAT_NAMES, stats)}
    for i, level in enumerate(LEVELS):
        value = ap(len(AREA_RANGES) + i)
        result[f"AP_{level}"] = None if value == -1.0 else value
    per_category = {}
    for k, cat in enumerate(gt.category_ids):
        value = _mean_defined(precision[:, :, k, 0, 2])
        per_category[cat] = None if value == -1.0 else value
    result["per_category"] = per_category
    result["stats"] = stats
    result["precision"] = precision
    result["recall"] = recall
    return result


def evaluate_files(gt_path, results_path, strict_lengths: bool = False) -> dict:
    """Evaluate a results JSON against a YouTube-VIS/OVIS annotation JSON (see :func:`evaluate_tracks`).

    ``strict_lengths`` refuses entries whose frame count is not their video's (the default pairs
    frames up to the shorter list, with a warning, as the public code does)."""
    from dvis.evaluation.ytvis_data import load_ground_truth, load_results

    gt = load_ground_truth(gt_path, strict_lengths)
    return evaluate_tracks(gt, load_results(results_path, gt, strict_lengths))
