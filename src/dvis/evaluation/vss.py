"""Video semantic segmentation: mIoU and video consistency (mVC8, mVC16), as the public VSPW scripts.

Layout (``utils/eval_miou_vspw.py`` / ``eval_vc_vspw.py``): ``GT_ROOT/<split file>`` lists the
videos, ``GT_ROOT/data/<video>/mask/<frame>.png`` holds ground-truth class maps,
``PRED/<video>/<frame>.png`` the predicted ones (class index 0..num_classes-1 per pixel).

mIoU: ground-truth value 0 is void, values v >= 1 are class v - 1 (values past the last class are
void too); one confusion matrix over all frames; IoU averaged over the classes that have
ground-truth pixels.

VC_n: for each window of n consecutive frames, among pixels whose ground truth stays the same
over the window (void included, the script compares raw values), the fraction whose prediction
also stays the same. Reproduced quirks:

* windows start at 0 .. T-n-1, so the last possible window is skipped, and videos with
  T <= n frames are skipped;
* the score is the mean over all windows of all videos pooled (not per video), windows with no
  consistent pixel (0/0) left out;
* the script keeps one list of window scores across n = 8 and n = 16, so its "VC16" averages the
  VC8 windows together with the VC16 ones. ``mVC16`` reproduces that; ``mVC16_own_windows`` is the
  VC16 of the 16-frame windows alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dvis.errors import DataError
from dvis.fileio import name_problem, shorten

VC_WINDOWS = (8, 16)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, where: str = "") -> np.ndarray:
    """(C, C) counts of one frame: rows = ground-truth class (VSPW labels: 0 void, v -> v-1)."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise DataError(f"{where}: prediction shape {pred.shape} differs from ground truth {gt.shape}")
    cls = gt.astype(np.int64) - 1  # 0 -> -1 (void)
    valid = (cls >= 0) & (cls < num_classes)
    p = pred[valid].astype(np.int64)
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise DataError(f"{where}: predicted class {int(p.max())} outside [0, {num_classes})")
    counts = np.bincount(num_classes * cls[valid] + p, minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over classes with ground-truth pixels (nan when there are none)."""
    confusion = confusion.astype(np.float64)
    diag = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diag / (confusion.sum(axis=1) + confusion.sum(axis=0) - diag)
    has_gt = confusion.sum(axis=1) > 0
    return float(np.nansum(iou * has_gt) / has_gt.sum()) if has_gt.any() else float("nan")


def window_consistency(gt: np.ndarray, pred: np.ndarray, n: int) -> list[float]:
    """VC of every window the script evaluates: gt, pred (T, H, W). nan where 0/0."""
    scores = []
    for start in range(len(gt) - n):
        gt_same = np.all(gt[start + 1:start + n] == gt[start], axis=0)
        pred_same = np.all(pred[start + 1:start + n] == pred[start], axis=0)
        consistent = gt_same.sum()
        scores.append(float((gt_same & pred_same).sum() / consistent) if consistent else float("nan"))
    return scores


def evaluate_arrays(videos: list[tuple[np.ndarray, np.ndarray]], num_classes: int = 124) -> dict:
    """videos: list of (gt (T, H, W), pred (T, H, W)) class maps in VSPW label conventions."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for v, (gt, pred) in enumerate(videos):
        for t in range(len(gt)):
            confusion += confusion_matrix(gt[t], pred[t], num_classes, f"video {v} frame {t}")
    pooled, own = [], {}
    for n in VC_WINDOWS:
        scores = []
        for gt, pred in videos:
            if len(gt) > n:
                scores.extend(window_consistency(gt, pred, n))
        pooled.extend(scores)
        own[n] = scores
    result = {"mIoU": mean_iou(confusion)}
    result["mVC8"] = _nanmean(own[8])
    result["mVC16"] = _nanmean(pooled)
    result["mVC16_own_windows"] = _nanmean(own[16])
    return result


def _nanmean(values: list[float]) -> float | None:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else None


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img)
    except FileNotFoundError as err:
        raise DataError(f"{path}: PNG not found") from err
    except OSError as err:
        raise DataError(f"{path}: not a readable image ({err})") from err


def evaluate_folders(gt_root: str | Path, pred_root: str | Path, split: str = "val.txt",
                     num_classes: int = 124) -> dict:
    """Evaluate a VSPW-layout set; frames are the sorted PNG names of each video's mask folder."""
    gt_root, pred_root = Path(gt_root), Path(pred_root)
    split_file = gt_root / split
    if not split_file.is_file():
        raise DataError(f"{split_file}: split file not found (one video name per line)")
    names = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    videos = []
    for line, name in enumerate(names, 1):
        problem = name_problem(name)
        if problem is not None:  # paths are built from the names: they must stay inside the two roots
            raise DataError(f"{split_file}: video name {line} {shorten(name)} {problem}")
        mask_dir = gt_root / "data" / name / "mask"
        if not mask_dir.is_dir():
            raise DataError(f"{mask_dir}: ground-truth mask folder not found")
        frames = sorted(p.name for p in mask_dir.iterdir() if p.suffix == ".png")
        gt = np.stack([_read_png(mask_dir / f) for f in frames]) if frames else np.zeros((0, 1, 1))
        pred = np.stack([_read_png(pred_root / name / f) for f in frames]) if frames else np.zeros((0, 1, 1))
        if gt.shape != pred.shape:
            raise DataError(f"{pred_root / name}: predictions {pred.shape} differ from ground truth {gt.shape}")
        videos.append((gt, pred))
    result = evaluate_arrays(videos, num_classes)
    result["videos"] = len(videos)
    return result
