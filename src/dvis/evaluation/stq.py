"""Segmentation and Tracking Quality (STQ = sqrt(AQ * SQ)), as the public VIPSeg scripts compute it.

Two parts, mirroring ``utils/eval_stq_vspw.py`` (label maps) and the numpy ``STQuality`` of
``utils/segmentation_and_tracking_quality.py`` (configured ``STQuality(124, things, 255, 16,
2**24)``):

* label maps: value = (class << 16) + instance, 255 / 255 for pixels no segment claims;
  instance = position of the segment id in the order of first appearance over the video's
  ``segments_info`` lists, counting from 0 (stuff segments take numbers too);
* AQ (class-agnostic): per sequence, for every ground-truth thing tube g,
  (1/|g|) sum_p TPA(p,g)^2 / (|p| + |g| - TPA(p,g)) over predicted thing tubes p, summed over
  tubes and divided by the number of tubes;
* SQ: class IoU from one confusion matrix over all sequences, ground-truth rows of the ignore
  label removed; predicted-ignore pixels form an extra class (index = number of classes) whose
  IoU is 0 but which counts in the mean whenever such pixels exist.

Reproduced quirks: thing instance 0 (the first segment id of a video, if it is a thing) is
treated as *crowd* - excluded from AQ and its pixels removed from the predictions too; the
JSON ``iscrowd`` flag is never read; association ignores classes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from dvis.errors import DataError
from dvis.evaluation.vipseg_io import PanopticSet, iter_videos

EPSILON = 1e-15


@dataclass
class _Sequence:
    confusion: np.ndarray
    gt_sizes: dict = field(default_factory=dict)
    pred_sizes: dict = field(default_factory=dict)
    intersections: dict = field(default_factory=dict)
    length: int = 0


def _add_counts(table: dict, values: np.ndarray) -> None:
    ids, counts = np.unique(values, return_counts=True)
    for key, count in zip(ids.tolist(), counts.tolist()):
        table[key] = table.get(key, 0) + count


class STQuality:
    """Accumulates STQ statistics frame by frame (label maps: (class << shift) + instance)."""

    def __init__(self, num_classes: int, things: list, ignore_label: int = 255, label_bit_shift: int = 16,
                 offset: int = 2 ** 24):
        if offset < num_classes << label_bit_shift:
            raise ValueError(f"offset {offset} must be at least num_classes << label_bit_shift")
        self.num_classes = num_classes
        self.things = np.asarray(list(things), dtype=np.int64)
        self.ignore_label = ignore_label
        self.shift = label_bit_shift
        self.bit_mask = (1 << label_bit_shift) - 1
        self.offset = offset
        if ignore_label >= num_classes:
            self.size = num_classes + 1
            self.include = np.arange(num_classes)
        else:
            self.size = num_classes
            self.include = np.array([i for i in range(num_classes) if i != ignore_label])
        self.sequences: OrderedDict = OrderedDict()

    def update(self, y_true: np.ndarray, y_pred: np.ndarray, sequence_id=0) -> None:
        """Add one frame: (H, W) integer label maps."""
        y_true = np.asarray(y_true).astype(np.int64)
        y_pred = np.asarray(y_pred).astype(np.int64)
        if y_true.shape != y_pred.shape:
            raise DataError(f"label maps differ in shape: {y_true.shape} vs {y_pred.shape}")
        sem_true = y_true >> self.shift
        sem_pred = y_pred >> self.shift
        if self.ignore_label > self.num_classes:
            sem_true = np.where(sem_true != self.ignore_label, sem_true, self.num_classes)
            sem_pred = np.where(sem_pred != self.ignore_label, sem_pred, self.num_classes)
        for name, sem in (("ground-truth", sem_true), ("predicted", sem_pred)):
            if sem.size and (sem.min() < 0 or sem.max() >= self.size):
                raise DataError(f"{name} class {int(sem.max())} outside [0, {self.size}) "
                                f"(num_classes={self.num_classes}, ignore_label={self.ignore_label})")
        seq = self.sequences.get(sequence_id)
        if seq is None:
            seq = self.sequences[sequence_id] = _Sequence(np.zeros((self.size, self.size), dtype=np.int64))
        np.add.at(seq.confusion, (sem_true.reshape(-1), sem_pred.reshape(-1)), 1)
        seq.length += 1
        true_things = np.isin(sem_true, self.things)
        pred_things = np.isin(sem_pred, self.things)
        crowd = ((y_true & self.bit_mask) == 0) & true_things
        true_things &= ~crowd
        pred_things &= ~crowd
        _add_counts(seq.pred_sizes, y_pred[pred_things])
        _add_counts(seq.gt_sizes, y_true[true_things])
        both = true_things & pred_things
        _add_counts(seq.intersections, y_true[both] * self.offset + y_pred[both])

    def _aq(self, seq: _Sequence) -> float:
        total = 0.0
        for gt_id, gt_size in seq.gt_sizes.items():
            inner = 0.0
            for pr_id, pr_size in seq.pred_sizes.items():
                tpa = seq.intersections.get(self.offset * gt_id + pr_id)
                if tpa is not None:
                    inner += tpa * (tpa / (pr_size + gt_size - tpa))
            total += 1.0 / gt_size * inner
        return total

    def _class_iou(self, confusion: np.ndarray):
        inter = confusion.diagonal()
        fps = confusion.sum(axis=0) - inter
        fns = confusion.sum(axis=1) - inter
        unions = inter + fps + fns
        ious = inter.astype(np.double) / np.maximum(unions, EPSILON).astype(np.double)
        num = np.count_nonzero(unions)
        return ious, num, inter, fps, fns, unions

    def result(self) -> dict:
        aq_sums, tubes, iou_per_seq = [], [], []
        total = np.zeros((self.size, self.size), dtype=np.int64)
        keep = np.zeros((self.size, 1), dtype=np.int64)
        keep[self.include] = 1
        for seq in self.sequences.values():
            aq_sums.append(self._aq(seq))
            tubes.append(len(seq.gt_sizes))
            confusion = seq.confusion * keep
            total += confusion
            ious, num, *_ = self._class_iou(confusion)
            iou_per_seq.append(float(np.sum(ious) / num) if num else float("nan"))
        aq = float(np.sum(aq_sums) / np.maximum(np.sum(tubes), EPSILON)) if aq_sums else 0.0
        aq_per_seq = np.asarray(aq_sums, dtype=np.float64) / np.maximum(np.asarray(tubes), EPSILON)
        ious, num, inter, fps, fns, unions = self._class_iou(total)
        iou = float(np.sum(ious) / num) if num else float("nan")
        per_class = {int(c): {"iou": float(ious[c]), "tp": int(inter[c]), "fp": int(fps[c]), "fn": int(fns[c])}
                     for c in np.nonzero(unions)[0]}
        return {"STQ": float(np.sqrt(aq * iou)), "AQ": aq, "SQ": iou, "IoU": iou,
                "STQ_per_seq": [float(x) for x in np.sqrt(aq_per_seq * np.asarray(iou_per_seq))],
                "AQ_per_seq": [float(x) for x in aq_per_seq], "IoU_per_seq": iou_per_seq,
                "ID_per_seq": list(self.sequences), "Length_per_seq": [s.length for s in self.sequences.values()],
                "per_class_iou": per_class}


# ----------------------------------------------------------------------------- VIPSeg label maps


def instance_numbers(frames_segments: list[list]) -> dict:
    """Segment id -> order of first appearance over a video's per-frame segments_info lists."""
    numbers = {}
    for segments in frames_segments:
        for el in segments:
            numbers.setdefault(el["id"], len(numbers))
    return numbers


def label_map(ids: np.ndarray, segments: list, numbers: dict, shift: int = 16, ignore: int = 255) -> np.ndarray:
    """(H, W) panoptic ids -> int32 (class << shift) + instance; unclaimed pixels -> ignore/ignore."""
    lookup = {}
    for el in segments:  # later entries of the same id win, as the script's loop assigns in order
        lookup[el["id"]] = (el["category_id"], numbers[el["id"]])
    uniq, inverse = np.unique(ids, return_inverse=True)
    sem = np.array([lookup.get(u, (ignore, ignore))[0] for u in uniq.tolist()], dtype=np.uint32)
    inst = np.array([lookup.get(u, (ignore, ignore))[1] for u in uniq.tolist()], dtype=np.uint32)
    values = (sem << shift) + inst
    return values[inverse.reshape(ids.shape)].astype(np.int32)


def video_label_maps(frames) -> tuple[np.ndarray, np.ndarray]:
    """Frames of one video (:class:`PanopticFrame`) -> gt, pred label maps (T, H, W) int32."""
    gt_numbers = instance_numbers([f.gt_segments for f in frames])
    pred_numbers = instance_numbers([f.pred_segments for f in frames])
    gt = np.stack([label_map(f.gt_ids, f.gt_segments, gt_numbers) for f in frames])
    pred = np.stack([label_map(f.pred_ids, f.pred_segments, pred_numbers) for f in frames])
    return gt, pred


def things_of(categories: list) -> list:
    return [c["id"] for c in categories if c.get("isthing")]


def evaluate_set(pset: PanopticSet, num_classes: int = 124) -> dict:
    """STQ of a VIPSeg-style set; sequences are numbered in the ground truth's video order."""
    categories = pset.gt_json["categories"]
    too_big = [c["id"] for c in categories if not 0 <= c["id"] < num_classes]
    if too_big:
        raise DataError(f"category ids {too_big} are outside [0, num_classes={num_classes})")
    metric = STQuality(num_classes, things_of(categories), 255, 16, 2 ** 24)
    for seq_id, (_video_id, frames) in enumerate(iter_videos(pset)):
        gt, pred = video_label_maps(frames)
        for t in range(len(frames)):
            metric.update(gt[t], pred[t], seq_id)
    result = metric.result()
    result["video_ids"] = pset.video_ids
    return result
