"""Reading VIPSeg-style panoptic video sets (JSON + RGB-encoded PNGs), as the public scripts do.

Layout (as ``utils/eval_vpq_vspw.py`` / ``eval_stq_vspw.py`` read it):

* ground-truth JSON: ``videos`` (``video_id``, ``images`` with ``file_name``), ``annotations``
  (per video: ``video_id`` and a per-frame list with ``segments_info``), ``categories``
  (``id``, ``isthing``);
* ``GT_DIR/<video_id>/<file_name>`` and ``PRED_DIR/pan_pred/<video_id>/<file_name>``: RGB PNGs,
  id = R + 256 G + 65536 B, 0 = void;
* ``PRED_DIR/pred.json``: ``{"annotations": [{"video_id", "annotations": [{"segments_info"}]}]}``.

Frames pair by *position*: the i-th image of a video, the i-th ground-truth annotation and the
i-th predicted annotation (file names inside the annotation lists are not used).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from dvis.errors import DataError
from dvis.fileio import name_problem, read_json, relative_path_problem, shorten


@dataclass
class PanopticFrame:
    gt_ids: np.ndarray  # (H, W) uint32 panoptic ids
    pred_ids: np.ndarray  # (H, W) uint32
    gt_segments: list  # segments_info of the ground truth
    pred_segments: list  # segments_info of the prediction


@dataclass
class PanopticSet:
    gt_json: dict
    pred_json: dict
    gt_dir: Path
    pred_png_dir: Path
    source: str

    @property
    def categories(self) -> dict:
        return {c["id"]: c for c in self.gt_json["categories"]}

    @property
    def video_ids(self) -> list:
        return [v["video_id"] for v in self.gt_json["videos"]]


def read_id_png(path: Path) -> np.ndarray:
    """RGB PNG -> (H, W) uint32 ids (R + 256 G + 65536 B)."""
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint32)
    except FileNotFoundError as err:
        raise DataError(f"{path}: panoptic PNG not found") from err
    except OSError as err:
        raise DataError(f"{path}: not a readable image ({err})") from err
    return rgb[:, :, 0] + rgb[:, :, 1] * 256 + rgb[:, :, 2] * 65536


def _check_keys(data: dict, keys: tuple, where: str) -> None:
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected an object, got {type(data).__name__}")
    for key in keys:
        if key not in data:
            raise DataError(f"{where}: missing field '{key}'")


def open_set(gt_json: str | Path, gt_dir: str | Path, pred_dir: str | Path,
             pred_json: str | Path | None = None) -> PanopticSet:
    """Load the two JSON files of a set; PNGs are read lazily per video."""
    gt_path = Path(gt_json)
    pred_path = Path(pred_json) if pred_json else Path(pred_dir) / "pred.json"
    gt = read_json(gt_path)
    pred = read_json(pred_path)
    _check_keys(gt, ("videos", "annotations", "categories"), str(gt_path))
    _check_keys(pred, ("annotations",), str(pred_path))
    _check_categories(gt["categories"], str(gt_path))
    return PanopticSet(gt, pred, Path(gt_dir), Path(pred_dir) / "pan_pred", str(pred_path))


def _check_categories(categories, where: str) -> None:
    for i, cat in enumerate(_check_list(categories, f"{where}: field 'categories'")):
        _check_keys(cat, ("id", "isthing"), f"{where}: categories[{i}]")
        if not _is_int(cat["id"]):
            raise DataError(f"{where}: categories[{i}]: field 'id' must be an integer, got {cat['id']!r}")


def _check_list(value, where: str) -> list:
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_inside(name: str, check, where: str) -> None:
    """PNG paths are built from video ids and file names: they must stay inside GT_DIR / PRED_DIR."""
    problem = check(name)
    if problem is not None:
        raise DataError(f"{where}: {shorten(name)} {problem}; PNGs are read from inside the given folders")


def _check_video_id(value, where: str):
    if not (_is_int(value) or isinstance(value, str)):
        raise DataError(f"{where}: field 'video_id' = {value!r} is not a string or an integer")
    return value


def _annotations_by_video(annotations: list, where: str) -> dict:
    by_video = {}
    for i, entry in enumerate(_check_list(annotations, f"{where}: field 'annotations'")):
        _check_keys(entry, ("video_id", "annotations"), f"{where}: annotations[{i}]")
        video_id = _check_video_id(entry["video_id"], f"{where}: annotations[{i}]")
        by_video[video_id] = _check_list(entry["annotations"], f"{where}: annotations[{i}]: field 'annotations'")
    return by_video


def _segments(frame, where: str, need_area: bool) -> list:
    """A frame's ``segments_info``: a list of objects with integer ``id`` and ``category_id``
    (and a numeric ``area`` in the ground truth)."""
    _check_keys(frame, ("segments_info",), where)
    segments = _check_list(frame["segments_info"], f"{where}: field 'segments_info'")
    for s, seg in enumerate(segments):
        label = f"{where}: segments_info[{s}]"
        _check_keys(seg, ("id", "category_id") + (("area",) if need_area else ()), label)
        for key in ("id", "category_id"):
            if not _is_int(seg[key]):
                raise DataError(f"{label}: field '{key}' must be an integer, got {seg[key]!r}")
        if need_area and (isinstance(seg["area"], bool) or not isinstance(seg["area"], (int, float))):
            raise DataError(f"{label}: field 'area' must be a number, got {seg['area']!r}")
    return segments


def iter_videos(pset: PanopticSet) -> Iterator[tuple[str, list[PanopticFrame]]]:
    """Yield (video_id, frames) in the ground truth's video order."""
    gt_by_video = _annotations_by_video(pset.gt_json["annotations"], "ground truth")
    pred_by_video = _annotations_by_video(pset.pred_json["annotations"], pset.source)
    for v_idx, video in enumerate(_check_list(pset.gt_json["videos"], "ground truth: field 'videos'")):
        where = f"ground truth: videos[{v_idx}]"
        _check_keys(video, ("video_id", "images"), where)
        video_id = _check_video_id(video["video_id"], where)
        _check_inside(str(video_id), name_problem, f"{where}: field 'video_id'")
        images = _check_list(video["images"], f"{where}: field 'images'")
        if video_id not in gt_by_video:
            raise DataError(f"ground truth: video {video_id!r} has no entry in 'annotations'")
        if video_id not in pred_by_video:
            raise DataError(f"{pset.source}: no predictions for video {video_id!r}")
        gt_frames, pred_frames = gt_by_video[video_id], pred_by_video[video_id]
        if not images or len(images) != len(gt_frames):
            raise DataError(f"ground truth: video {video_id!r} lists {len(images)} images and "
                            f"{len(gt_frames)} annotated frames; expected the same number, at least 1")
        if len(gt_frames) != len(pred_frames):
            raise DataError(f"{pset.source}: video {video_id!r} has {len(pred_frames)} predicted frames, "
                            f"the ground truth {len(gt_frames)}")
        frames = []
        for f, (image, gt_ann, pred_ann) in enumerate(zip(images, gt_frames, pred_frames)):
            _check_keys(image, ("file_name",), f"{where}: images[{f}]")
            name = str(image["file_name"])
            _check_inside(name, relative_path_problem, f"{where}: images[{f}]: field 'file_name'")
            gt_ids = read_id_png(pset.gt_dir / str(video_id) / name)
            pred_ids = read_id_png(pset.pred_png_dir / str(video_id) / name)
            if gt_ids.shape != pred_ids.shape:
                raise DataError(f"{pset.pred_png_dir / str(video_id) / name}: size {pred_ids.shape} differs from "
                                f"the ground truth's {gt_ids.shape}")
            pred_segments = _segments(pred_ann, f"{pset.source}: video {video_id!r} frame {f}", need_area=False)
            gt_segments = _segments(gt_ann, f"ground truth: video {video_id!r} frame {f}", need_area=True)
            frames.append(PanopticFrame(gt_ids, pred_ids, gt_segments, pred_segments))
        yield video_id, frames
