"""Reading YouTube-VIS / OVIS ground truth and results files into evaluation records.

Mirrors what the public ``YTVOS`` / ``loadRes`` do, with clear errors instead of asserts:
ground-truth ``avg_area`` is the mean of the truthy entries of the annotation's ``areas``
(null and 0 skipped, 0 when none); a result's areas come from its masks; result ids are the
1-based positions in the results list; results of categories absent from the ground truth's
``categories`` are dropped; a result for a video the ground truth lacks is an error.

A results entry or annotation whose ``segmentations`` list is longer or shorter than its video is
accepted, as the public code accepts it (its IoU pairs frame lists up to the shorter one), with one
:class:`FrameCountWarning` per file naming the entries and their lengths. ``strict_lengths=True``
refuses such input with a :class:`~dvis.errors.DataError` instead.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dvis.errors import DataError
from dvis.evaluation import rle as rle_ops
from dvis.evaluation.occlusion import occlusion_level
from dvis.fileio import read_json

MAX_LISTED_MISMATCHES = 5


class FrameCountWarning(UserWarning):
    """A results entry or annotation has more or fewer frames than its video."""


@dataclass
class Video:
    id: Any
    height: int
    width: int
    length: int


@dataclass
class Track:
    """One ground-truth object or one detection: a mask (or None) per frame."""

    id: int
    video_id: Any
    category_id: Any
    rles: list  # T entries: compressed RLE dict or None
    avg_area: float
    score: float = 0.0
    iscrowd: bool = False
    occlusion: str | None = None


@dataclass
class GroundTruth:
    videos: dict  # id -> Video, in sorted id order
    categories: list  # category dicts sorted by id
    tracks: list = field(default_factory=list)  # Track, in file order

    @property
    def category_ids(self) -> list:
        return [c["id"] for c in self.categories]


def _require(entry: dict, key: str, where: str) -> Any:
    if key not in entry:
        raise DataError(f"{where}: missing field '{key}'")
    return entry[key]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_int(entry: dict, key: str, where: str, minimum: int | None = None) -> int:
    value = _require(entry, key, where)
    if not _is_int(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise DataError(f"{where}: field '{key}' must be an integer{bound}, got {value!r}")
    return value


def _require_id(entry: dict, key: str, where: str) -> Any:
    """Video ids are integers or strings (hashable and printable)."""
    value = _require(entry, key, where)
    if not (_is_int(value) or isinstance(value, str)):
        raise DataError(f"{where}: field '{key}' must be an integer or a string, got {value!r}")
    return value


def _is_finite_number(value: Any) -> bool:
    """A JSON number that is a finite float (an integer of 400 digits is not: float() overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _mean_truthy(values: list, where: str = "areas") -> float:
    kept = [v for v in values if v]
    if not all(_is_finite_number(v) for v in kept):
        raise DataError(f"{where}: field 'areas' must hold numbers or null, got {kept!r}")
    return float(np.array(kept, dtype=np.float64).mean()) if kept else 0.0


def _video_from(entry: Any, where: str) -> Video:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
    vid = _require_id(entry, "id", where)
    height = _require_int(entry, "height", where, minimum=1)
    width = _require_int(entry, "width", where, minimum=1)
    if "file_names" in entry:
        if not isinstance(entry["file_names"], list):
            raise DataError(f"{where}: field 'file_names' must be a list")
        length = len(entry["file_names"])
    else:
        length = _require_int(entry, "length", f"{where} (neither 'file_names' nor 'length')", minimum=0)
    return Video(vid, height, width, length)


def _sorted_by_id(items: list, where: str) -> list:
    try:
        return sorted(items, key=lambda item: item.id if hasattr(item, "id") else item["id"])
    except TypeError:
        raise DataError(f"{where}: ids mix integers and strings; they cannot be ordered") from None


def _categories(entries: list, source: str) -> list:
    for i, cat in enumerate(entries):
        if not isinstance(cat, dict):
            raise DataError(f"{source}: categories[{i}]: expected an object, got {type(cat).__name__}")
        _require_int(cat, "id", f"{source}: categories[{i}]")
    return sorted(entries, key=lambda c: c["id"])


def _frame_rles(segms: Any, video: Video, where: str, strict_lengths: bool = False) -> list:
    """One RLE (or None) per entry of ``segms``; the list keeps its own length unless
    ``strict_lengths``, which refuses a length that is not the video's."""
    if not isinstance(segms, list):
        raise DataError(f"{where}: field 'segmentations' must be a list (one entry per frame), "
                        f"got {type(segms).__name__}")
    if strict_lengths and len(segms) != video.length:
        raise DataError(f"{where}: field 'segmentations' has {len(segms)} frames but video "
                        f"{video.id!r} has {video.length} (strict_lengths=True; the public YTVOSeval "
                        f"would pair the frames up to the shorter list)")
    return rle_ops.to_rles(segms, video.height, video.width, f"{where}: segmentations")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _length_mismatch(label: str, rles: list, video: Video) -> str | None:
    """``label has N frames, video V has M`` when the lengths differ, else None."""
    if len(rles) == video.length:
        return None
    return f"{label} has {_count(len(rles), 'frame')}, video {video.id!r} has {video.length}"


def _warn_length_mismatches(source: str, kind: str, mismatches: list[str]) -> None:
    """One warning per file, listing the first :data:`MAX_LISTED_MISMATCHES` offenders."""
    if not mismatches:
        return
    listed = "; ".join(mismatches[:MAX_LISTED_MISMATCHES])
    more = len(mismatches) - MAX_LISTED_MISMATCHES
    listed += f"; and {more} more" if more > 0 else ""
    verb = "has" if len(mismatches) == 1 else "have"
    warnings.warn(f"{source}: {_count(len(mismatches), kind)} {verb} a frame count other than their video's "
                  f"({listed}); frames are paired up to the shorter list, as the public YTVOSeval does "
                  f"(strict_lengths=True / dvis eval --strict-lengths refuses such input)",
                  FrameCountWarning, stacklevel=3)


def parse_ground_truth(data: Any, source: str = "<ground truth>", strict_lengths: bool = False) -> GroundTruth:
    """YouTube-VIS-format dict -> :class:`GroundTruth` (validates every field it uses).

    An annotation with more or fewer ``segmentations`` than its video's frames is kept (with a
    :class:`FrameCountWarning`) unless ``strict_lengths``, which refuses it."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object with 'videos', 'annotations', 'categories'")
    for key in ("videos", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{source}: missing or non-list field '{key}'")
    if not data["categories"]:
        raise DataError(f"{source}: field 'categories' is empty; evaluation needs at least one category "
                        f"(AP is averaged over categories)")
    videos = [_video_from(v, f"{source}: videos[{i}]") for i, v in enumerate(data["videos"])]
    by_id = {v.id: v for v in _sorted_by_id(videos, f"{source}: videos")}
    gt = GroundTruth(videos=by_id, categories=_categories(data["categories"], source))
    mismatches = []
    for i, ann in enumerate(data["annotations"]):
        track = _ground_truth_track(ann, by_id, f"{source}: annotations[{i}]", strict_lengths)
        gt.tracks.append(track)
        mismatches.append(_length_mismatch(f"annotations[{i}] (id {track.id})", track.rles, by_id[track.video_id]))
    _warn_length_mismatches(source, "annotation", [m for m in mismatches if m])
    return gt


def _ground_truth_track(ann: Any, videos: dict, where: str, strict_lengths: bool) -> Track:
    if not isinstance(ann, dict):
        raise DataError(f"{where}: expected an object")
    video_id = _require_id(ann, "video_id", where)
    if video_id not in videos:
        raise DataError(f"{where}: field 'video_id' = {video_id!r} is not in 'videos'")
    areas = _require(ann, "areas", where)
    if not isinstance(areas, list):
        raise DataError(f"{where}: field 'areas' must be a list")
    return Track(
        id=_require_int(ann, "id", where), video_id=video_id,
        category_id=_require_int(ann, "category_id", where),
        rles=_frame_rles(_require(ann, "segmentations", where), videos[video_id], where, strict_lengths),
        avg_area=_mean_truthy(areas, where), iscrowd=bool(ann.get("iscrowd", 0)),
        occlusion=occlusion_level(ann, where))


def load_ground_truth(path: str | Path, strict_lengths: bool = False) -> GroundTruth:
    return parse_ground_truth(read_json(path), str(path), strict_lengths)


def _score(entry: dict, where: str) -> float:
    score = _require(entry, "score", where)
    if not _is_finite_number(score):
        shown = repr(score) if len(repr(score)) <= 40 else f"an integer of {len(str(score))} digits"
        raise DataError(f"{where}: field 'score' must be a finite number, got {shown}")
    return float(score)


def parse_results(entries: Any, gt: GroundTruth, source: str = "<results>",
                  strict_lengths: bool = False) -> list[Track]:
    """Results list -> detections (ids = 1-based positions; unknown categories dropped).

    An entry with more or fewer ``segmentations`` than its video's frames is kept, with a
    :class:`FrameCountWarning`: its IoU pairs frames up to the shorter list and its area is the
    mean over all of its own frames, as in the public ``loadRes``. ``strict_lengths`` refuses it."""
    if not isinstance(entries, list):
        raise DataError(f"{source}: expected a JSON list of results, got {type(entries).__name__}")
    known_categories = set(gt.category_ids)
    dets, mismatches = [], []
    for i, entry in enumerate(entries):
        det = _detection(entry, i, gt, f"{source}: entry {i}", strict_lengths)
        if det.category_id in known_categories:
            dets.append(det)
            mismatches.append(_length_mismatch(f"entry {i}", det.rles, gt.videos[det.video_id]))
    _warn_length_mismatches(source, "result", [m for m in mismatches if m])
    return dets


def _detection(entry: Any, index: int, gt: GroundTruth, where: str, strict_lengths: bool) -> Track:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
    video_id = _require_id(entry, "video_id", where)
    if video_id not in gt.videos:
        raise DataError(f"{where}: field 'video_id' = {video_id!r} is not a video of the ground truth")
    category_id = _require_int(entry, "category_id", where)
    score = _score(entry, where)
    rles = _frame_rles(_require(entry, "segmentations", where), gt.videos[video_id], where, strict_lengths)
    present = [r for r in rles if r is not None]
    avg_area = _mean_truthy(list(rle_ops.areas(present))) if present else 0.0
    return Track(id=index + 1, video_id=video_id, category_id=category_id, rles=rles,
                 avg_area=avg_area, score=score)


def load_results(path: str | Path, gt: GroundTruth, strict_lengths: bool = False) -> list[Track]:
    return parse_results(read_json(path), gt, str(path), strict_lengths)
