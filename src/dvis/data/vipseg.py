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


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64 segment ids, id = R + 256 G + 65536 B."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8, the inverse of :func:`rgb_to_id`."""
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


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
    :class:`PanopticVideo`. ``check_files`` verifies on load that every PNG (and, with
    ``check_images``, every frame image) exists."""

    def __init__(
        self,
        panoptic_json: str | os.PathLike,
        panoptic_root: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        image_ext: str = ".jpg",
        check_files: bool = True,
        check_images: bool = False,
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
            if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "isthing" not in cat:
                raise self.fail(f"categories[{index}]", "fields 'id' (integer) and 'isthing' are required")
        return cats

    def _index(self, data: dict) -> list[PanopticVideo]:
        images = {}
        for index, video in enumerate(data.get("videos") or []):
            if "video_id" not in video:
                raise self.fail(f"videos[{index}]", "field 'video_id' is missing")
            images[video["video_id"]] = {img["id"]: img for img in video.get("images", [])}
        anns = data.get("annotations")
        if not isinstance(anns, list):
            raise self.fail("top level", "field 'annotations' is missing or not a list")
        return [self._video(index, ann, images) for index, ann in enumerate(anns)]

    def _video(self, index: int, ann: dict, images: dict) -> PanopticVideo:
        if "video_id" not in ann:
            raise self.fail(f"annotations[{index}]", "field 'video_id' is missing")
        video_id = str(ann["video_id"])
        where = f"video {video_id}"
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
            image = video_images.get(frame.get("image_id"))
            if image is None:
                raise self.fail(f"{where}, frame {t}", f"field 'image_id' = {frame.get('image_id')!r} is not in 'videos'")
            size = size or (image.get("height"), image.get("width"))
            segments = []
            for s, seg in enumerate(frame.get("segments_info", [])):
                if seg.get("category_id") not in known:
                    raise self.fail(f"{where}, frame {t}, field 'segments_info'[{s}]",
                                    f"'category_id' = {seg.get('category_id')!r} is not in 'categories'")
                if not isinstance(seg.get("id"), int):
                    raise self.fail(f"{where}, frame {t}, field 'segments_info'[{s}]", "'id' is missing")
                segments.append({**seg, "isthing": known[seg["category_id"]]})
            stem = os.path.splitext(image["file_name"])[0]
            image_file = (self.image_root / video_id / (stem + self.image_ext)) if self.image_root else Path()
            infos.append(PanopticFrame(image_file, self.panoptic_root / video_id / frame["file_name"], segments))
        return PanopticVideo(video_id, int(size[0]), int(size[1]), infos)

    def _check_files(self, check_images: bool) -> None:
        for video in self._videos:
            for t, frame in enumerate(video.frames_info):
                if not frame.panoptic_file.is_file():
                    raise self.fail(f"video {video.video_id}, frame {t}, field 'file_name'",
                                    f"panoptic file {frame.panoptic_file} does not exist")
                if check_images and self.image_root and not frame.image_file.is_file():
                    raise self.fail(f"video {video.video_id}, frame {t}, field 'file_name'",
                                    f"frame file {frame.image_file} does not exist")

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
