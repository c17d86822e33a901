"""COCO instance annotations (images), read lazily, for turning images into pseudo videos.

Layout: ``images`` [{id, file_name, height, width}], ``annotations`` [{id, image_id, category_id,
segmentation (polygons or RLE), iscrowd}], ``categories`` [{id, name}].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvis.data import masks as mask_codec
from dvis.data.video import read_image
from dvis.data.ytvis import FrameInstances, load_json
from dvis.errors import DataError


@dataclass
class ImageRecord:
    image_id: int
    file_name: Path
    height: int
    width: int
    annotations: list[dict]

    def load_frame(self, t: int = 0) -> np.ndarray:
        return read_image(self.file_name)

    def frame_instances(self, t: int = 0) -> FrameInstances:
        """All annotated objects of the image; ids are the annotation ids."""
        decoded = [(a, mask_codec.decode(a["segmentation"], self.height, self.width)) for a in self.annotations]
        decoded = [(a, m) for a, m in decoded if m is not None]
        return FrameInstances(
            ids=np.array([a.get("id", i) for i, (a, _) in enumerate(decoded)], np.int64),
            category_ids=np.array([a["category_id"] for a, _ in decoded], np.int64),
            iscrowd=np.array([a.get("iscrowd", 0) for a, _ in decoded], np.int64),
            masks=np.stack([m for _, m in decoded]) if decoded else np.zeros((0, self.height, self.width), bool),
        )


class CocoImages:
    """COCO instances JSON + image root; ``dataset[i]`` is an :class:`ImageRecord`."""

    def __init__(self, ann_json: str | os.PathLike, image_root: str | os.PathLike):
        self.ann_json = Path(ann_json)
        self.image_root = Path(image_root)
        data = load_json(self.ann_json)
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DataError(f"{self.ann_json}: top level: field '{key}' is missing or not a list")
        self.categories = data["categories"]
        known = {c.get("id") for c in self.categories}
        self.images = data["images"]
        by_image: dict = {img.get("id"): [] for img in self.images}
        for index, ann in enumerate(data["annotations"]):
            where = f"{self.ann_json}: annotation {ann.get('id', f'#{index}')}"
            if ann.get("image_id") not in by_image:
                raise DataError(f"{where}: field 'image_id' = {ann.get('image_id')!r} names no image")
            if ann.get("category_id") not in known:
                raise DataError(f"{where}: field 'category_id' = {ann.get('category_id')!r} is not in 'categories'")
            if "segmentation" not in ann:
                raise DataError(f"{where}: field 'segmentation' is missing")
            by_image[ann["image_id"]].append(ann)
        self._annotations = by_image

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> ImageRecord:
        image = self.images[index]
        return ImageRecord(
            image_id=image["id"],
            file_name=self.image_root / image["file_name"],
            height=int(image["height"]),
            width=int(image["width"]),
            annotations=self._annotations[image["id"]],
        )

    def image_annotations(self, image_id: int) -> list[dict]:
        """The annotations of image ``image_id`` (the JSON's dicts, not copies)."""
        return self._annotations[image_id]

    def category_index(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(sorted(c["id"] for c in self.categories))}


class MappedCocoImages:
    """The images of a :class:`CocoImages` relabelled into a video set's categories, for pseudo videos.

    ``category_map`` (COCO category id -> video category id, see :mod:`dvis.data.coco_categories`)
    renames each object's ``category_id``; objects of unmapped categories and crowd objects are
    dropped, and images left without an object are skipped (the release's YouTube-VIS configs filter
    them the same way, ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``). ``category_index()`` is the video
    set's (video category id -> contiguous class index), so pseudo clips share its class indices.
    ``source`` names the map in error messages (a config key).
    """

    def __init__(self, images: CocoImages, category_map: dict[int, int], category_index: dict[int, int],
                 source: str = "category map"):
        unknown = sorted({v for v in category_map.values() if v not in category_index})
        if unknown:
            raise DataError(f"{source}: video category ids {unknown[:8]} are not categories of the video set "
                            f"(it has {sorted(category_index)[:8]}{'...' if len(category_index) > 8 else ''})")
        self.images = images
        self.ann_json = images.ann_json
        self.category_map = dict(category_map)
        self._category_index = dict(category_index)
        self._kept = [i for i, image in enumerate(images.images) if any(
            self._kept_object(a) for a in images.image_annotations(image["id"]))]
        if not self._kept:
            raise DataError(f"{images.ann_json}: no image has a non-crowd object of a category in {source}")

    def _kept_object(self, ann: dict) -> bool:
        return ann["category_id"] in self.category_map and not ann.get("iscrowd", 0)

    def _objects(self, image_id) -> list[dict]:
        """The image's non-crowd annotations of mapped categories, relabelled (shallow copies)."""
        return [{**a, "category_id": self.category_map[a["category_id"]]}
                for a in self.images.image_annotations(image_id) if self._kept_object(a)]

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, index: int) -> ImageRecord:
        record = self.images[self._kept[index]]
        record.annotations = self._objects(record.image_id)
        return record

    def category_index(self) -> dict[int, int]:
        return dict(self._category_index)
