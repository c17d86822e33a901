"""YouTube-VIS / OVIS dataset reader (lazy): the JSON is parsed and validated once; frames and
masks are decoded only when asked for.

Annotation file layout (YouTube-VIS 2019/2021/2022, OVIS)::

    videos:      [{id, file_names: [...], height, width, length?}, ...]
    annotations: [{id, video_id, category_id, segmentations: [RLE | polygons | null per frame],
                   areas?, bboxes?, iscrowd?, height?, width?, length?, ...}, ...]  (absent in test splits)
    categories:  [{id, name, ...}, ...]

Unknown keys (for example the synthetic benchmark's ``occlusion`` fields) are kept in ``extra``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from dvis.data import masks as mask_codec
from dvis.data.video import read_image
from dvis.errors import DataError
from dvis.fileio import read_json, relative_path_problem, shorten

_KNOWN_ANN_KEYS = {"id", "video_id", "category_id", "segmentations", "areas", "bboxes", "iscrowd",
                   "height", "width", "length"}


@dataclass
class FrameInstances:
    """The instances of one frame: ``masks`` (n, H, W) bool, ``ids``, ``category_ids`` and
    ``iscrowd`` (n,) int64. Instances not visible in the frame are left out."""

    ids: np.ndarray
    category_ids: np.ndarray
    iscrowd: np.ndarray
    masks: np.ndarray


@dataclass
class InstanceAnnotation:
    """One object track of a video. ``segmentations[t]`` is the raw JSON entry of frame t."""

    id: int
    category_id: int
    iscrowd: int
    segmentations: list
    height: int
    width: int
    areas: list | None = None
    bboxes: list | None = None
    extra: dict = field(default_factory=dict)
    source: str = "annotation"  # file, video and annotation, for error messages

    def present(self, t: int) -> bool:
        seg = self.segmentations[t]
        return seg is not None and not (isinstance(seg, list) and len(seg) == 0)

    def mask(self, t: int) -> np.ndarray | None:
        """(H, W) bool mask of frame t, or None where the object is not annotated."""
        return mask_codec.decode(self.segmentations[t], self.height, self.width,
                                 where=f"{self.source}, field 'segmentations'[{t}]")


@dataclass
class VideoRecord:
    video_id: int | str
    name: str
    file_names: list[Path]  # absolute frame paths
    height: int
    width: int
    annotations: list[InstanceAnnotation]

    @property
    def length(self) -> int:
        return len(self.file_names)

    def load_frame(self, t: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB frame t."""
        frame = read_image(self.file_names[t])
        if frame.shape[:2] != (self.height, self.width):
            raise DataError(f"frame {self.file_names[t]} of video {self.video_id} is "
                            f"{frame.shape[1]}x{frame.shape[0]}, the annotation says {self.width}x{self.height}")
        return frame

    def frames(self) -> Iterator[np.ndarray]:
        for t in range(self.length):
            yield self.load_frame(t)

    def frame_instances(self, t: int) -> FrameInstances:
        shown = [a for a in self.annotations if a.present(t)]
        masks = [a.mask(t) for a in shown]
        return FrameInstances(
            ids=np.array([a.id for a in shown], np.int64),
            category_ids=np.array([a.category_id for a in shown], np.int64),
            iscrowd=np.array([a.iscrowd for a in shown], np.int64),
            masks=np.stack(masks) if masks else np.zeros((0, self.height, self.width), bool),
        )


def load_json(path: Path) -> dict:
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise DataError(f"annotation file {path}: expected a JSON object at the top, got {type(data).__name__}")
    return data


class YTVISDataset:
    """YouTube-VIS / OVIS annotation file + image root. ``dataset[i]`` is a :class:`VideoRecord`.

    ``check_files`` verifies on load that every frame file exists (a stat per frame).
    """

    def __init__(self, ann_json: str | os.PathLike, image_root: str | os.PathLike, check_files: bool = True):
        self.ann_json = Path(ann_json)
        self.image_root = Path(image_root)
        data = load_json(self.ann_json)
        checker = _Validator(self.ann_json)
        self.categories: list[dict] = checker.categories(data)
        self.videos: list[dict] = checker.videos(data)
        self._annotations: dict = {v["id"]: [] for v in self.videos}
        by_id = {v["id"]: v for v in self.videos}
        known = {c["id"] for c in self.categories}
        for index, ann in enumerate(checker.annotation_list(data)):
            video = checker.annotation(index, ann, by_id, known)
            self._annotations[video["id"]].append(ann)
        if check_files:
            for video in self.videos:
                checker.frame_files(video, self.image_root)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> VideoRecord:
        video = self.videos[index]
        height, width = video["height"], video["width"]
        anns = [_instance(a, height, width, f"{self.ann_json}: video {video['id']}")
                for a in self._annotations[video["id"]]]
        return VideoRecord(
            video_id=video["id"],
            name=video_name(video),
            file_names=[self.image_root / f for f in video["file_names"]],
            height=height,
            width=width,
            annotations=anns,
        )

    def category_index(self) -> dict[int, int]:
        """Dataset category id -> contiguous class index (0..K-1, in category-id order)."""
        return {cid: i for i, cid in enumerate(sorted(c["id"] for c in self.categories))}


def video_name(video: dict) -> str:
    if video.get("name"):
        return str(video["name"])
    first = Path(video["file_names"][0]) if video["file_names"] else None
    return first.parent.name if first is not None and first.parent.name else str(video["id"])


def _instance(ann: dict, height: int, width: int, source: str) -> InstanceAnnotation:
    return InstanceAnnotation(
        id=int(ann["id"]) if "id" in ann else -1,
        category_id=int(ann["category_id"]),
        iscrowd=int(ann.get("iscrowd", 0) or 0),
        segmentations=ann["segmentations"],
        height=height,
        width=width,
        areas=ann.get("areas"),
        bboxes=ann.get("bboxes"),
        extra={k: v for k, v in ann.items() if k not in _KNOWN_ANN_KEYS},
        source=f"{source}, annotation {ann.get('id', '?')}",
    )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value) -> bool:
    """Video ids are integers or strings (hashable, comparable, printable)."""
    return _is_int(value) or isinstance(value, str)


class _Validator:
    """Checks a YouTube-VIS JSON; every error names the file, the video and the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, message: str) -> DataError:
        return DataError(f"{self.path}: {where}: {message}")

    def categories(self, data: dict) -> list[dict]:
        cats = data.get("categories")
        if not isinstance(cats, list):
            raise self.fail("top level", "field 'categories' is missing or not a list")
        for index, cat in enumerate(cats):
            if not isinstance(cat, dict) or not _is_int(cat.get("id")):
                raise self.fail(f"categories[{index}]", "field 'id' is missing or not an integer")
        return cats

    def videos(self, data: dict) -> list[dict]:
        videos = data.get("videos")
        if not isinstance(videos, list):
            raise self.fail("top level", "field 'videos' is missing or not a list")
        seen = set()
        for index, video in enumerate(videos):
            self._video(index, video)
            if video["id"] in seen:
                raise self.fail(f"video {video['id']}", "field 'id' is used by two videos")
            seen.add(video["id"])
        return videos

    def _video(self, index: int, video) -> None:
        if not isinstance(video, dict) or "id" not in video:
            raise self.fail(f"videos[{index}]", "field 'id' is missing")
        if not _is_id(video["id"]):
            raise self.fail(f"videos[{index}]", f"field 'id' = {video['id']!r} is not an integer or a string")
        where = f"video {video['id']}"
        files = video.get("file_names")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise self.fail(where, "field 'file_names' is missing or not a list of strings")
        if not files:
            raise self.fail(where, "field 'file_names' is empty (zero frames)")
        for t, name in enumerate(files):
            problem = relative_path_problem(name)
            if problem is not None:
                raise self.fail(f"{where}, field 'file_names'[{t}]", f"{shorten(name)} {problem}; frame files "
                                                                    f"are read from inside the frames folder")
        for key in ("height", "width"):
            if not _is_int(video.get(key)) or video[key] <= 0:
                raise self.fail(where, f"field '{key}' is missing or not a positive integer")
        if "length" in video and video["length"] != len(files):
            raise self.fail(where, f"field 'length' is {video['length']} but 'file_names' has {len(files)} entries")

    def annotation_list(self, data: dict) -> list:
        anns = data.get("annotations")
        if anns is None:  # test splits have no annotations
            return []
        if not isinstance(anns, list):
            raise self.fail("top level", f"field 'annotations' must be a list, got {type(anns).__name__}")
        return anns

    def annotation(self, index: int, ann, videos: dict, categories: set) -> dict:
        if not isinstance(ann, dict):
            raise self.fail(f"annotations[{index}]", "expected an object")
        if "id" in ann and not _is_int(ann["id"]):
            raise self.fail(f"annotations[{index}]", f"field 'id' = {ann['id']!r} is not an integer")
        label = f"annotation {ann.get('id', f'#{index}')}"
        if "video_id" not in ann:
            raise self.fail(label, "field 'video_id' is missing")
        if not _is_id(ann["video_id"]):
            raise self.fail(label, f"field 'video_id' = {ann['video_id']!r} is not an integer or a string")
        video = videos.get(ann["video_id"])
        if video is None:
            raise self.fail(f"{label} (video {ann['video_id']})",
                            f"field 'video_id' = {ann['video_id']!r} names no video in 'videos'")
        where = f"video {video['id']}, {label}"
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in categories:
            raise self.fail(where, f"field 'category_id' = {ann.get('category_id')!r} is not in 'categories' "
                                   f"(known: {', '.join(map(str, sorted(categories)))})")
        if ann.get("iscrowd") not in (None, 0, 1, True, False):
            raise self.fail(where, f"field 'iscrowd' = {ann['iscrowd']!r}; expected 0 or 1")
        self._annotation_shape(where, ann, video)
        length = len(video["file_names"])
        segs = ann.get("segmentations")
        if not isinstance(segs, list):
            raise self.fail(where, "field 'segmentations' is missing or not a list")
        for key in ("segmentations", "areas", "bboxes"):
            values = ann.get(key)
            if values is not None and (not isinstance(values, list) or len(values) != length):
                got = len(values) if isinstance(values, list) else type(values).__name__
                raise self.fail(where, f"field '{key}' has {got} entries but the video has {length} frames")
        for t, seg in enumerate(segs):
            self._segmentation(f"{where}, field 'segmentations'[{t}]", seg, video)
        return video

    def _annotation_shape(self, where: str, ann: dict, video: dict) -> None:
        """Optional per-annotation ``height``/``width`` must be the video's; ``length`` must be the
        video's frame count or 1 (YouTube-VIS 2019 annotation files hold 1 there, whatever the
        video's length)."""
        for key in ("height", "width"):
            if key in ann and (not _is_int(ann[key]) or ann[key] != video[key]):
                raise self.fail(where, f"field '{key}' = {ann[key]!r} but video {video['id']} has "
                                       f"{key} {video[key]}")
        frames = len(video["file_names"])
        if "length" in ann and (not _is_int(ann["length"]) or ann["length"] not in (1, frames)):
            raise self.fail(where, f"field 'length' = {ann['length']!r}; expected the video's frame count "
                                   f"{frames} (or 1, as the YouTube-VIS release writes)")

    def _segmentation(self, where: str, seg, video: dict) -> None:
        if seg is None:
            return
        if isinstance(seg, dict):
            size = seg.get("size")
            if size != [video["height"], video["width"]]:
                raise self.fail(where, f"RLE 'size' is {size}, expected [{video['height']}, {video['width']}]")
            if not isinstance(seg.get("counts"), (str, list)):
                raise self.fail(where, "RLE 'counts' is missing (expected a string or a list of ints)")
            return  # run lengths are checked when the mask is decoded (cost paid only when used)
        if isinstance(seg, list):
            mask_codec.check_polygons(seg, video["height"], video["width"], f"{self.path}: {where}")
            return
        raise self.fail(where, f"expected an RLE object, a list of polygons or null, got {type(seg).__name__}")

    def frame_files(self, video: dict, image_root: Path) -> None:
        for t, name in enumerate(video["file_names"]):
            path = image_root / name
            if not path.is_file():
                raise self.fail(f"video {video['id']}, field 'file_names'[{t}]", f"frame file {path} does not exist")
