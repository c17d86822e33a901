"""Video panoptic quality (VPQ) as the public VIPSeg script (``utils/eval_vpq_vspw.py``) computes it.

For every window of ``n`` consecutive frames (stride 1) of every video, segments with the same
id across the window form tubes; a ground-truth tube and a predicted tube of the same category
match when their tube IoU > 0.5 (strictly). Per category: PQ = sum IoU / (TP + FP/2 + FN/2).
Reproduced behaviour:

* a tube's category and crowd flag come from the first frame of the window where its id
  appears; ground-truth areas are the JSON ``area`` values summed over the window (duplicate
  entries within a frame add up), predicted areas are PNG pixel counts;
* union = pred area + gt area - intersection - (pred pixels on void), so predicted pixels on
  void do not count against a match;
* every (gt, pred) pair above the threshold counts as a TP (no one-to-one enforcement beyond
  what IoU > 0.5 implies);
* unmatched crowd ground truth is not a false negative; for each category only the *last*
  unmatched crowd tube (in first-appearance order) is remembered, and an unmatched prediction
  whose void + same-category-crowd overlap exceeds half its area is not a false positive;
* categories with TP + FP + FN = 0 are skipped in the averages; All / Things / Stuff follow the
  ground truth's ``isthing``.

The script averages n = 1, 2, 4, 6, 8 frames (k = 0, 5, 15, 25, 35 at VIPSeg's 5-frame
spacing) and reports that as VPQ; the paper's k = {0, 5, 10, 15} (n = 1, 2, 3, 4) is reported
beside it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from dvis.errors import DataError
from dvis.evaluation.vipseg_io import PanopticFrame, PanopticSet, iter_videos

OFFSET = 256 * 256 * 256
VOID = 0
SCRIPT_NFRAMES = (1, 2, 4, 6, 8)
PAPER_NFRAMES = (1, 2, 3, 4)
FRAME_SPACING = 5  # VIPSeg annotates every 5th frame: k = (n - 1) * 5


@dataclass
class FrameSegments:
    gt: dict  # id -> [category_id, iscrowd, area]
    pred: dict  # id -> [category_id, area]
    pairs: dict  # (gt_id, pred_id) -> pixel count


@dataclass
class CategoryStat:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


@dataclass
class VPQStat:
    per_category: dict = field(default_factory=lambda: defaultdict(CategoryStat))

    def add(self, other: "VPQStat") -> None:
        for cat, s in other.per_category.items():
            mine = self.per_category[cat]
            mine.iou += s.iou
            mine.tp += s.tp
            mine.fp += s.fp
            mine.fn += s.fn


def frame_segments(frame: PanopticFrame, categories: dict, where: str) -> FrameSegments:
    """Per-frame tables, with the script's sanity checks turned into DataErrors."""
    gt = {}
    for el in frame.gt_segments:
        if el["id"] in gt:
            gt[el["id"]][2] += el["area"]
        else:
            gt[el["id"]] = [el["category_id"], el.get("iscrowd", 0), el["area"]]
    pred = {}
    for el in frame.pred_segments:
        if el["id"] not in pred:
            pred[el["id"]] = [el["category_id"], 0]
    labels, counts = np.unique(frame.pred_ids, return_counts=True)
    unseen = set(pred)
    for label, count in zip(labels.tolist(), counts.tolist()):
        if label not in pred:
            if label == VOID:
                continue
            raise DataError(f"{where}: segment id {label} is in the PNG but not in 'segments_info'")
        pred[label][1] = count
        unseen.discard(label)
        if pred[label][0] not in categories:
            raise DataError(f"{where}: segment id {label} has unknown category_id {pred[label][0]}")
    if unseen:
        raise DataError(f"{where}: segment ids {sorted(unseen)} are in 'segments_info' but not in the PNG")
    combined = frame.gt_ids.astype(np.uint64) * OFFSET + frame.pred_ids.astype(np.uint64)
    keys, counts = np.unique(combined, return_counts=True)
    pairs = {(int(k // OFFSET), int(k % OFFSET)): int(c) for k, c in zip(keys.tolist(), counts.tolist())}
    return FrameSegments(gt, pred, pairs)


def _tubes(frames: list[FrameSegments]):
    gt_tubes, pred_tubes, pairs = {}, {}, defaultdict(int)
    for fs in frames:
        for k, (cat, crowd, area) in fs.gt.items():
            if k in gt_tubes:
                gt_tubes[k][2] += area
            else:
                gt_tubes[k] = [cat, crowd, area]
        for k, (cat, area) in fs.pred.items():
            if k in pred_tubes:
                pred_tubes[k][1] += area
            else:
                pred_tubes[k] = [cat, area]
        for key, count in fs.pairs.items():
            pairs[key] += count
    return gt_tubes, pred_tubes, pairs


def window_stat(frames: list[FrameSegments], where: str = "") -> VPQStat:
    """TP/FP/FN/IoU of one window of frames."""
    stat = VPQStat()
    gt_tubes, pred_tubes, pairs = _tubes(frames)
    gt_matched, pred_matched = set(), set()
    for (g, p) in sorted(pairs):
        if g not in gt_tubes or p not in pred_tubes or gt_tubes[g][1] == 1:
            continue
        if gt_tubes[g][0] != pred_tubes[p][0]:
            continue
        inter = pairs[g, p]
        union = pred_tubes[p][1] + gt_tubes[g][2] - inter - pairs.get((VOID, p), 0)
        iou = inter / union if union > 0 else float("inf")
        if iou > 1.0:
            raise DataError(f"{where}: ground-truth segment {g} has a JSON 'area' smaller than its "
                            f"PNG pixels (tube IoU {iou} > 1)")
        if iou > 0.5:
            s = stat.per_category[gt_tubes[g][0]]
            s.tp += 1
            s.iou += iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd_by_category = {}
    for g, (cat, crowd, _area) in gt_tubes.items():
        if g in gt_matched:
            continue
        if crowd == 1:
            crowd_by_category[cat] = g
            continue
        stat.per_category[cat].fn += 1
    for p, (cat, area) in pred_tubes.items():
        if p in pred_matched:
            continue
        ignored = pairs.get((VOID, p), 0)
        if cat in crowd_by_category:
            ignored += pairs.get((crowd_by_category[cat], p), 0)
        if ignored / area > 0.5:
            continue
        stat.per_category[cat].fp += 1
    return stat


def video_stat(frames: list[FrameSegments], nframes: int, where: str = "") -> VPQStat:
    stat = VPQStat()
    for start in range(0, len(frames) - nframes + 1):
        stat.add(window_stat(frames[start:start + nframes], where))
    return stat


def pq_average(stat: VPQStat, categories: dict, isthing: bool | None) -> tuple[dict, dict]:
    """Mean PQ/SQ/RQ over categories with TP+FP+FN > 0 (nan when there are none)."""
    pq = sq = rq = 0.0
    n = 0
    per_class = {}
    for cat, info in categories.items():
        if isthing is not None and (info.get("isthing") == 1) != isthing:
            continue
        s = stat.per_category.get(cat, CategoryStat())
        if s.tp + s.fp + s.fn == 0:
            per_class[cat] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "iou": 0.0, "tp": 0, "fp": 0, "fn": 0}
            continue
        n += 1
        denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
        per_class[cat] = {"pq": s.iou / denom, "sq": s.iou / s.tp if s.tp else 0, "rq": s.tp / denom,
                          "iou": s.iou, "tp": s.tp, "fp": s.fp, "fn": s.fn}
        pq += per_class[cat]["pq"]
        sq += per_class[cat]["sq"]
        rq += per_class[cat]["rq"]
    nan = float("nan")
    summary = {"pq": pq / n if n else nan, "sq": sq / n if n else nan, "rq": rq / n if n else nan, "n": n}
    return summary, per_class


def _summarise_windows(stat: VPQStat, categories: dict) -> dict:
    all_, per_class = pq_average(stat, categories, None)
    things, _ = pq_average(stat, categories, True)
    stuff, _ = pq_average(stat, categories, False)
    return {"All": all_, "Things": things, "Stuff": stuff, "per_class": per_class}


def evaluate_frames(videos: list[tuple[str, list[FrameSegments]]], categories: dict,
                    script_nframes: tuple = SCRIPT_NFRAMES, paper_nframes: tuple = PAPER_NFRAMES) -> dict:
    """VPQ for every window size of both window sets, from per-frame segment tables."""
    windows = {}
    for n in sorted(set(script_nframes) | set(paper_nframes)):
        stat = VPQStat()
        for video_id, frames in videos:
            stat.add(video_stat(frames, n, f"video {video_id!r}"))
        windows[n] = _summarise_windows(stat, categories)
    return {"windows": windows, **_final(windows, tuple(script_nframes)),
            "k_0_5_10_15": _final(windows, tuple(paper_nframes))}


def _final(windows: dict, nframes: tuple) -> dict:
    def mean(part: str) -> float:
        return float(sum(100 * windows[n][part]["pq"] for n in nframes) / len(nframes))

    return {"nframes": list(nframes), "k": [(n - 1) * FRAME_SPACING for n in nframes],
            "VPQ": mean("All"), "VPQ_thing": mean("Things"), "VPQ_stuff": mean("Stuff"),
            "per_window": {n: {"VPQ": 100 * windows[n]["All"]["pq"], "VPQ_thing": 100 * windows[n]["Things"]["pq"],
                               "VPQ_stuff": 100 * windows[n]["Stuff"]["pq"]} for n in nframes}}


def evaluate_set(pset: PanopticSet, script_nframes: tuple = SCRIPT_NFRAMES,
                 paper_nframes: tuple = PAPER_NFRAMES) -> dict:
    """Evaluate a VIPSeg-style set (see :mod:`dvis.evaluation.vipseg_io` for the layout).

    ``VPQ``/``VPQ_thing``/``VPQ_stuff``: mean over ``script_nframes`` windows (x100);
    ``k_0_5_10_15``: the same over ``paper_nframes``; ``windows[n]``: per window size details.
    """
    categories = pset.categories
    videos = []
    for video_id, frames in iter_videos(pset):
        tables = [frame_segments(fr, categories, f"{pset.pred_png_dir / str(video_id)} frame {i}")
                  for i, fr in enumerate(frames)]
        videos.append((video_id, tables))
    return evaluate_frames(videos, categories, script_nframes, paper_nframes)
