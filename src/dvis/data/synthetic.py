"""Synthetic occlusion benchmark in YouTube-VIS format (and, optionally, VIPSeg panoptic format).

Textured shapes of several classes move over a textured background, enter and leave the frame,
pass behind each other (fixed depth order) and include look-alike instances (same class, colour,
texture and size) that cross each other. Every annotation carries its occlusion:

* per frame ``occlusions[t] = 1 - visible_area / amodal_area`` where ``amodal_area`` is the
  object's full in-frame area ignoring occluders (leaving the image is truncation, not
  occlusion); ``null`` where the object is outside the frame; 1.0 where it is in the frame but
  completely hidden (its segmentation is then ``null``, as in OVIS);
* ``occlusion`` = the mean of the non-null per-frame values;
* ``occlusion_level`` = "light" (< 0.25), "medium" (0.25 - 0.5) or "heavy" (> 0.5), OVIS's bands.

Layout written by :func:`generate`::

    OUT/annotations.json                       YouTube-VIS format
    OUT/JPEGImages/<video>/<frame>.jpg
    OUT/panomasksRGB/<video>/<frame>.png       --panoptic: id = R + 256 G + 65536 B, 0 = void
    OUT/panoptic_gt_VIPSeg_val.json            --panoptic: VIPSeg layout (videos/annotations/categories)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from dvis.data.synth_render import FrameRenderer, RenderedFrame
from dvis.data.synth_scene import OCCLUSION_LEVELS, STUFF_NAMES, SceneSpec, sample_scene
from dvis.data.synth_shapes import SHAPES
from dvis.data.vipseg import id_to_rgb
from dvis.errors import InputError
from dvis.fileio import make_dir_beside, writing

THING_CATEGORIES = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
STUFF_CATEGORIES = [
    {"id": len(SHAPES) + i + 1, "name": name, "supercategory": "stuff"} for i, name in enumerate(STUFF_NAMES)
]
_STUFF_ID = {c["name"]: c["id"] for c in STUFF_CATEGORIES}
_THING_COLOURS = [[220, 20, 60], [0, 130, 60], [0, 60, 200], [250, 170, 30], [160, 40, 160], [0, 170, 170]]
_STUFF_COLOURS = [[70, 130, 180], [150, 100, 90], [110, 90, 55], [40, 95, 160], [95, 95, 100]]
ANNOTATION_FILE = "annotations.json"
PANOPTIC_FILE = "panoptic_gt_VIPSeg_val.json"
JPEG_QUALITY = 90


def occlusion_level(mean_occlusion: float) -> str:
    """OVIS's bands: light below 0.25, medium 0.25 to 0.5 (inclusive), heavy above 0.5."""
    if mean_occlusion < 0.25:
        return "light"
    return "medium" if mean_occlusion <= 0.5 else "heavy"


@dataclass
class ObjectTrack:
    """Per-frame statistics of one object, gathered while rendering."""

    category_id: int
    visible_areas: list[int] = field(default_factory=list)
    amodal_areas: list[int] = field(default_factory=list)
    rles: list[dict | None] = field(default_factory=list)

    @property
    def occlusions(self) -> list[float | None]:
        return [None if a == 0 else 1.0 - v / a for v, a in zip(self.visible_areas, self.amodal_areas)]

    @property
    def mean_occlusion(self) -> float:
        values = [o for o in self.occlusions if o is not None]
        return float(np.mean(values)) if values else 0.0

    @property
    def ever_visible(self) -> bool:
        return any(self.visible_areas)


@dataclass
class SyntheticVideo:
    """One rendered video held in memory (for tests and demos; :func:`generate` streams)."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (N, T, H, W) bool visible masks of the objects that are ever visible
    category_ids: np.ndarray  # (N,) int64 thing category ids (1-based)
    occlusions: list[list[float | None]]  # N lists of T values (None = outside the frame)
    amodal_areas: np.ndarray  # (N, T) int64
    regions: np.ndarray  # (H, W) int8 stuff region map (0 top, 1 bottom, 2 band)
    stuff_category_ids: list[int | None]  # category id of each region (None if absent)


def _check_args(frames: int, height: int, width: int, objects: tuple[int, int], occlusion: str) -> None:
    if frames < 1:
        raise InputError(f"frames must be >= 1, got {frames}")
    if height < 8 or width < 8:
        raise InputError(f"height and width must be >= 8, got {height}x{width}")
    lo, hi = objects
    if lo < 0 or hi < lo or hi > 999:
        raise InputError(f"objects must be MIN-MAX with 0 <= MIN <= MAX <= 999, got {lo}-{hi}")
    if occlusion not in OCCLUSION_LEVELS:
        raise InputError(f"occlusion must be one of {', '.join(OCCLUSION_LEVELS)}, got {occlusion!r}")


def _scene(seed: int, video_index: int, height, width, frames, objects, occlusion) -> SceneSpec:
    rng = np.random.default_rng([seed, video_index])
    return sample_scene(rng, height, width, frames, objects, occlusion)


def _iter_frames(scene: SceneSpec) -> Iterator[tuple[RenderedFrame, np.ndarray, list]]:
    """Yields (rendered frame, visible areas (N,), compressed RLE or None per object)."""
    renderer = FrameRenderer(scene)
    count = len(scene.objects)
    labels_ids = np.arange(1, count + 1, dtype=np.int16)
    for t in range(scene.frames):
        frame = renderer.render(t)
        visible = np.bincount(frame.labels.ravel(), minlength=count + 1)[1:]
        rles: list = [None] * count
        shown = np.flatnonzero(visible)
        if shown.size:
            stack = np.asfortranarray((frame.labels[..., None] == labels_ids[shown]).astype(np.uint8))
            for index, rle in zip(shown, mask_utils.encode(stack)):
                rle["counts"] = rle["counts"].decode("ascii")
                rles[index] = rle
        yield frame, visible, rles


def render_video(
    seed: int = 0,
    frames: int = 8,
    height: int = 64,
    width: int = 64,
    objects: tuple[int, int] = (2, 4),
    occlusion: str = "medium",
    video_index: int = 0,
) -> SyntheticVideo:
    """Renders video ``video_index`` of the set :func:`generate` would write for ``seed``,
    in memory (frames identical to the JPEG inputs before compression)."""
    _check_args(frames, height, width, objects, occlusion)
    scene = _scene(seed, video_index, height, width, frames, objects, occlusion)
    count = len(scene.objects)
    images, labels, amodal = [], [], []
    for frame, _, _ in _iter_frames(scene):
        images.append(frame.image)
        labels.append(frame.labels)
        amodal.append(frame.amodal_areas)
    label_stack = np.stack(labels)  # (T, H, W)
    amodal_areas = np.stack(amodal, axis=1) if count else np.zeros((0, frames), np.int64)
    keep = [k for k in range(count) if np.any(label_stack == k + 1)]
    masks = np.stack([label_stack == k + 1 for k in keep]) if keep else np.zeros((0, frames, height, width), bool)
    occl = []
    for k in keep:
        vis = masks[keep.index(k)].reshape(frames, -1).sum(1)
        occl.append([None if a == 0 else 1.0 - v / a for v, a in zip(vis, amodal_areas[k])])
    renderer_regions = FrameRenderer(scene).regions
    bg = scene.background
    return SyntheticVideo(
        frames=np.stack(images),
        masks=masks,
        category_ids=np.array([scene.objects[k].category_id for k in keep], np.int64),
        occlusions=occl,
        amodal_areas=amodal_areas[keep] if keep else np.zeros((0, frames), np.int64),
        regions=renderer_regions,
        stuff_category_ids=[_STUFF_ID[bg.top], _STUFF_ID[bg.bottom], _STUFF_ID[bg.band] if bg.band else None],
    )


def _video_name(video_index: int) -> str:
    return f"video_{video_index + 1:04d}"


def _frame_stem(t: int) -> str:
    return f"{t:05d}"


class _PanopticWriter:
    """Writes one video's panoptic PNGs and collects its VIPSeg-style segments info."""

    def __init__(self, root: Path, name: str, scene: SceneSpec, regions: np.ndarray):
        self.folder = root / "panomasksRGB" / name
        self.folder.mkdir(parents=True)
        bg = scene.background
        region_cats = [_STUFF_ID[bg.top], _STUFF_ID[bg.bottom], _STUFF_ID[bg.band] if bg.band else 0]
        self.stuff_ids = np.array(region_cats, np.int64)[regions]  # segment id = category id
        self.thing_ids = np.array(
            [0] + [1000 * obj.category_id + k + 1 for k, obj in enumerate(scene.objects)], np.int64
        )
        self.category = {int(c): int(c) for c in region_cats if c}
        self.category.update({int(self.thing_ids[k + 1]): obj.category_id for k, obj in enumerate(scene.objects)})
        self.frames: list[dict] = []
        self.images: list[dict] = []

    def add(self, t: int, labels: np.ndarray, visible: np.ndarray) -> None:
        """labels (H, W) int16 object label map, visible (N,) visible area of each object."""
        pan = np.where(labels > 0, self.thing_ids[labels], self.stuff_ids)
        file_name = f"{_frame_stem(t)}.png"
        Image.fromarray(id_to_rgb(pan)).save(self.folder / file_name, compress_level=1)
        stuff_area = np.bincount(self.stuff_ids[labels == 0], minlength=1)
        segments = [
            {"id": int(i), "category_id": self.category[int(i)], "iscrowd": 0, "area": int(stuff_area[i])}
            for i in np.flatnonzero(stuff_area)
            if i != 0
        ]
        segments += [
            {"id": int(self.thing_ids[k + 1]), "category_id": self.category[int(self.thing_ids[k + 1])],
             "iscrowd": 0, "area": int(a)}
            for k, a in enumerate(visible)
            if a > 0
        ]
        self.frames.append({"image_id": _frame_stem(t), "file_name": file_name, "segments_info": segments})
        height, width = labels.shape
        self.images.append({"id": _frame_stem(t), "width": width, "height": height, "file_name": file_name})


def _write_video(root: Path, video_index: int, scene: SceneSpec, panoptic: bool, first_ann_id: int):
    """Renders and writes one video; returns (video entry, annotations, panoptic writer or None)."""
    name = _video_name(video_index)
    (root / "JPEGImages" / name).mkdir(parents=True)
    tracks = [ObjectTrack(obj.category_id) for obj in scene.objects]
    pan_writer = None
    file_names = []
    for t, (frame, visible, rles) in enumerate(_iter_frames(scene)):
        file_name = f"{name}/{_frame_stem(t)}.jpg"
        Image.fromarray(frame.image).save(root / "JPEGImages" / file_name, quality=JPEG_QUALITY, subsampling=0)
        file_names.append(file_name)
        for track, vis, amo, rle in zip(tracks, visible, frame.amodal_areas, rles):
            track.visible_areas.append(int(vis))
            track.amodal_areas.append(int(amo))
            track.rles.append(rle)
        if panoptic:
            if pan_writer is None:
                pan_writer = _PanopticWriter(root, name, scene, FrameRenderer(scene).regions)
            pan_writer.add(t, frame.labels, visible)
    video = {"id": video_index + 1, "name": name, "width": scene.width, "height": scene.height,
             "length": scene.frames, "file_names": file_names}
    annotations = []
    for track in (t for t in tracks if t.ever_visible):
        annotations.append(_annotation(first_ann_id + len(annotations), video, track))
    return video, annotations, pan_writer


def _annotation(ann_id: int, video: dict, track: ObjectTrack) -> dict:
    bboxes = [None if r is None else [float(x) for x in mask_utils.toBbox(_rle_bytes(r))] for r in track.rles]
    occlusions = [None if o is None else round(o, 6) for o in track.occlusions]
    mean = round(track.mean_occlusion, 6)
    return {
        "id": ann_id,
        "video_id": video["id"],
        "category_id": track.category_id,
        "segmentations": track.rles,
        "areas": [a if a else None for a in track.visible_areas],
        "bboxes": bboxes,
        "iscrowd": 0,
        "height": video["height"],
        "width": video["width"],
        "length": video["length"],
        "occlusions": occlusions,
        "occlusion": mean,
        "occlusion_level": occlusion_level(mean),
    }


def _rle_bytes(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def _dump_json(path: Path, payload: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(payload, separators=(",", ":")))  # dumps uses the C encoder


def generate(
    out_dir: str | os.PathLike,
    videos: int,
    frames: int,
    seed: int,
    height: int = 128,
    width: int = 128,
    objects: tuple[int, int] = (2, 6),
    occlusion: str = "medium",
    panoptic: bool = False,
    overwrite: bool = False,
) -> Path:
    """Writes a synthetic set to ``out_dir`` and returns the path of ``annotations.json``.

    The set is built in a temporary sibling folder and moved into place at the end, so an
    interrupted run leaves no partial set. Same arguments give byte-identical files.
    """
    _check_args(frames, height, width, objects, occlusion)
    if videos < 1:
        raise InputError(f"videos must be >= 1, got {videos}")
    out = Path(out_dir)
    _check_target(out, overwrite)
    with writing(out, "synthetic set"):
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = make_dir_beside(out)
    try:
        with writing(out, "synthetic set"):  # disk full: OutputWriteError, and no partial set is left
            _write_set(staging, videos, frames, seed, height, width, objects, occlusion, panoptic)
            _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / ANNOTATION_FILE


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} is not empty; choose another folder or overwrite it (--overwrite)")


def _move_into_place(staging: Path, out: Path) -> None:
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, trash)
        os.replace(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out)


def _write_set(root: Path, videos, frames, seed, height, width, objects, occlusion, panoptic) -> None:
    video_entries, annotations, pan_videos, pan_annotations = [], [], [], []
    for index in range(videos):
        scene = _scene(seed, index, height, width, frames, objects, occlusion)
        video, anns, pan = _write_video(root, index, scene, panoptic, len(annotations) + 1)
        video_entries.append(video)
        annotations.extend(anns)
        if pan is not None:
            pan_videos.append({"video_id": video["name"], "images": pan.images})
            pan_annotations.append({"video_id": video["name"], "annotations": pan.frames})
    info = {"description": "dvis synthetic occlusion benchmark", "seed": seed, "occlusion": occlusion,
            "objects": list(objects), "version": 1}
    _dump_json(root / ANNOTATION_FILE, {"info": info, "licenses": [], "videos": video_entries,
                                        "annotations": annotations, "categories": THING_CATEGORIES})
    if panoptic:
        categories = [
            {"id": c["id"], "name": c["name"], "isthing": 1, "color": _THING_COLOURS[i]}
            for i, c in enumerate(THING_CATEGORIES)
        ] + [
            {"id": c["id"], "name": c["name"], "isthing": 0, "color": _STUFF_COLOURS[i]}
            for i, c in enumerate(STUFF_CATEGORIES)
        ]
        _dump_json(root / PANOPTIC_FILE, {"videos": pan_videos, "annotations": pan_annotations,
                                          "categories": categories})
