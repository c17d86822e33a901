"""VIPSeg panoptic dataset reader (lazy): one RGB PNG per frame (segment id = R + 256 G + 65536 B,
0 = void) plus a JSON with per-frame ``segments_info``.

JSON layout (as the VIPSeg release and its evaluation scripts read it)::

    videos:      [{video_id: str, images: [{id, file_name, height, width}, ...]}, ...]
    annotations: [{video_id, annotations: [{image_id, file_name, segments_info: [
                      {id, category_id, iscrowd, area}, ...]}, ...]}, ...]
    categories:  [{id, name, isthing, color}, ...]

Paths: ``panoptic_root/<video_id>/<file_name>`` (PNG) and
``image_root/<video_id>/<stem of file_name><image_ext>`` (the release reads ``.jpg`` frames).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from dvis.data.video import read_image
from dvis.data.ytvis import FrameInstances, load_json
from dvis.errors import DataError
from dvis.fileio import name_problem, relative_path_problem, shorten


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64 segment ids, id = R + 256 G + 65536 B."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8, the inverse of :func:`rgb_to_id`."""
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value) -> bool:
    return _is_int(value) or isinstance(value, str)


@dataclass
class PanopticFrame:
    image_file: Path
    panoptic_file: Path
    segments_info: list[dict]  # {id, category_id, iscrowd, area, isthing}


@dataclass
class PanopticVideo:
    video_id: str
    height: int
    width: int
    frames_info: list[PanopticFrame]

    @property
    def name(self) -> str:
        return self.video_id

    @property
    def length(self) -> int:
        return len(self.frames_info)

    @property
    def file_names(self) -> list[Path]:
        return [f.image_file for f in self.frames_info]

    def load_frame(self, t: int) -> np.ndarray:
        return read_image(self.frames_info[t].image_file)

    def frames(self) -> Iterator[np.ndarray]:
        for t in range(self.length):
            yield self.load_frame(t)

    def panoptic(self, t: int) -> np.ndarray:
        """(H, W) int64 segment id map of frame t (0 = void)."""
        path = self.frames_info[t].panoptic_file
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except FileNotFoundError:
            raise DataError(f"panoptic file {path} of video {self.video_id} does not exist") from None
        except OSError as err:
            raise DataError(f"panoptic file {path} of video {self.video_id} cannot be read: {err}") from None
        return rgb_to_id(rgb)

    def frame_instances(self, t: int) -> FrameInstances:
        """Every segment (thing and stuff) of frame t as an instance with its id."""
        id_map = self.panoptic(t)
        segments = [s for s in self.frames_info[t].segments_info if np.any(id_map == s["id"])]
        masks = np.stack([id_map == s["id"] for s in segments]) if segments else np.zeros((0, *id_map.shape), bool)
        return FrameInstances(
            ids=np.array([s["id"] for s in segments], np.int64),
            category_ids=np.array([s["category_id"] for s in segments], np.int64),
            iscrowd=np.array([s.get("iscrowd", 0) for s in segments], np.int64),
            masks=masks,
        )


class VIPSegDataset:
    """VIPSeg panoptic JSON + panoptic PNG root + image root. ``dataset[i]`` is a
    :class:`PanopticVideo`. ``check_files`` verifies on load that every panoptic PNG exists and,
    when an ``image_root`` is given (and ``check_images`` is left on), every frame image too: one
    stat per file, nothing is decoded."""

    def __init__(
        self,
        panoptic_json: str | os.PathLike,
        panoptic_root: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        image_ext: str = ".jpg",
        check_files: bool = True,
        check_images: bool = True,
    ):
        self.panoptic_json = Path(panoptic_json)
        self.panoptic_root = Path(panoptic_root)
        self.image_root = Path(image_root) if image_root is not None else None
        self.image_ext = image_ext
        data = load_json(self.panoptic_json)
        self.categories = self._categories(data)
        self.thing_ids = {c["id"] for c in self.categories if c.get("isthing")}
        self.stuff_ids = {c["id"] for c in self.categories if not c.get("isthing")}
        self._videos = self._index(data)
        if check_files:
            self._check_files(check_images)

    def fail(self, where: str, message: str) -> DataError:
        return DataError(f"{self.panoptic_json}: {where}: {message}")

    def _categories(self, data: dict) -> list[dict]:
        cats = data.get("categories")
        if not isinstance(cats, list):
            raise self.fail("top level", "field 'categories' is missing or not a list")
        for index, cat in enumerate(cats):
            if not isinstance(cat, dict) or not _is_int(cat.get("id")) or "isthing" not in cat:
                raise self.fail(f"categories[{index}]", "fields 'id' (integer) and 'isthing' are required")
        return cats

    def _index(self, data: dict) -> list[PanopticVideo]:
        videos = data.get("videos") or []
        if not isinstance(videos, list):
            raise self.fail("top level", "field 'videos' must be a list")
        images = {}
        for index, video in enumerate(videos):
            self._check_id(f"videos[{index}]", video, "video_id")
            images[video["video_id"]] = self._images(f"video {video['video_id']}", video.get("images", []))
        anns = data.get("annotations")
        if not isinstance(anns, list):
            raise self.fail("top level", "field 'annotations' is missing or not a list")
        return [self._video(index, ann, images) for index, ann in enumerate(anns)]

    def _check_id(self, where: str, entry, key: str) -> None:
        if not isinstance(entry, dict):
            raise self.fail(where, f"expected an object, got {type(entry).__name__}")
        if key not in entry:
            raise self.fail(where, f"field '{key}' is missing")
        if not _is_id(entry[key]):
            raise self.fail(where, f"field '{key}' = {entry[key]!r} is not a string or an integer")

    def _images(self, where: str, images) -> dict:
        if not isinstance(images, list):
            raise self.fail(where, "field 'images' must be a list")
        by_id = {}
        for index, image in enumerate(images):
            if not isinstance(image, dict) or not _is_id(image.get("id")) \
                    or not isinstance(image.get("file_name"), str):
                raise self.fail(f"{where}, images[{index}]", "fields 'id' and 'file_name' (a string) are required")
            self._inside(f"{where}, images[{index}], field 'file_name'", image["file_name"], relative_path_problem)
            by_id[image["id"]] = image
        return by_id

    def _inside(self, where: str, name: str, check) -> None:
        """Paths are built from video ids and file names: they must stay inside their folders."""
        problem = check(name)
        if problem is not None:
            raise self.fail(where, f"{shorten(name)} {problem}; files are read from inside the set's folders")

    def _video(self, index: int, ann, images: dict) -> PanopticVideo:
        self._check_id(f"annotations[{index}]", ann, "video_id")
        video_id = str(ann["video_id"])
        where = f"video {video_id}"
        self._inside(f"annotations[{index}], field 'video_id'", video_id, name_problem)
        video_images = images.get(ann["video_id"])
        if video_images is None:
            raise self.fail(where, "field 'video_id' names no entry of 'videos'")
        frames = ann.get("annotations")
        if not isinstance(frames, list) or not frames:
            raise self.fail(where, "field 'annotations' is missing or empty")
        if len(frames) != len(video_images):
            raise self.fail(where, f"field 'annotations' has {len(frames)} frames but 'videos' lists "
                                   f"{len(video_images)} images")
        known = {c["id"]: bool(c["isthing"]) for c in self.categories}
        infos, size = [], None
        for t, frame in enumerate(frames):
            if not isinstance(frame, dict) or not isinstance(frame.get("file_name"), str):
                raise self.fail(f"{where}, frame {t}", "expected an object with 'file_name' (a string)")
            self._inside(f"{where}, frame {t}, field 'file_name'", frame["file_name"], relative_path_problem)
            image = video_images.get(frame.get("image_id")) if _is_id(frame.get("image_id")) else None
            if image is None:
                raise self.fail(f"{where}, frame {t}", f"field 'image_id' = {frame.get('image_id')!r} is not in 'videos'")
            size = size or self._size(f"{where}, frame {t}", image)
            segments = self._segments(f"{where}, frame {t}", frame.get("segments_info", []), known)
            stem = os.path.splitext(image["file_name"])[0]
            image_file = (self.image_root / video_id / (stem + self.image_ext)) if self.image_root else Path()
            infos.append(PanopticFrame(image_file, self.panoptic_root / video_id / frame["file_name"], segments))
        return PanopticVideo(video_id, size[0], size[1], infos)

    def _size(self, where: str, image: dict) -> tuple[int, int]:
        height, width = image.get("height"), image.get("width")
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            raise self.fail(where, f"image 'height'/'width' must be positive integers, got {height!r}/{width!r}")
        return height, width

    def _segments(self, where: str, infos, known: dict) -> list[dict]:
        if not isinstance(infos, list):
            raise self.fail(where, "field 'segments_info' must be a list")
        segments = []
        for s, seg in enumerate(infos):
            label = f"{where}, field 'segments_info'[{s}]"
            if not isinstance(seg, dict):
                raise self.fail(label, "expected an object")
            if not _is_int(seg.get("category_id")) or seg["category_id"] not in known:
                raise self.fail(label, f"'category_id' = {seg.get('category_id')!r} is not in 'categories'")
            if not _is_int(seg.get("id")):
                raise self.fail(label, "'id' is missing")
            if seg.get("iscrowd", 0) not in (0, 1):
                raise self.fail(label, f"'iscrowd' = {seg['iscrowd']!r}; expected 0 or 1")
            segments.append({**seg, "isthing": known[seg["category_id"]]})
        return segments

    def _check_files(self, check_images: bool) -> None:
        for video in self._videos:
            for t, frame in enumerate(video.frames_info):
                where = f"video {video.video_id}, frame {t}"
                if not frame.panoptic_file.is_file():
                    raise self.fail(f"{where}, field 'file_name'", f"panoptic file {frame.panoptic_file} does not exist")
                if check_images and self.image_root is not None and not frame.image_file.is_file():
                    raise self.fail(f"{where}, field 'images' 'file_name'",
                                    f"frame image {frame.image_file} does not exist (expected "
                                    f"image_root/<video_id>/<stem of file_name>{self.image_ext})")

    @property
    def videos(self) -> list[dict]:
        return [{"id": v.video_id, "height": v.height, "width": v.width, "length": v.length,
                 "file_names": [str(p) for p in v.file_names]} for v in self._videos]

    def __len__(self) -> int:
        return len(self._videos)

    def __getitem__(self, index: int) -> PanopticVideo:
        return self._videos[index]

    def category_index(self) -> dict[int, int]:
        """Dataset category id -> contiguous class index (0..K-1, in category-id order)."""
        return {cid: i for i, cid in enumerate(sorted(c["id"] for c in self.categories))}
