"""YouTube-VIS / OVIS reader: round trip of every segmentation kind, validation errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from dvis.data.ytvis import YTVISDataset
from dvis.errors import DataError

DATA = Path(__file__).parent / "data"
H, W = 12, 16


def _masks() -> list[np.ndarray]:
    square = np.zeros((H, W), bool)
    square[2:6, 3:9] = True
    blob = np.zeros((H, W), bool)
    blob[7:11, 10:15] = True
    return [square, blob]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.T.ravel().astype(np.uint8)  # column-major, as COCO counts
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _make_set(root: Path) -> dict:
    """One video, 3 frames: instance 1 uses compressed RLE / null / uncompressed RLE, instance 2 a
    polygon / polygon / null, instance 3 is a crowd region."""
    images = root / "JPEGImages" / "vid"
    images.mkdir(parents=True)
    for t in range(3):
        Image.fromarray(np.full((H, W, 3), 30 * t, np.uint8)).save(images / f"{t:05d}.jpg")
    square, _ = _masks()
    polygon = [[10.0, 7.0, 15.0, 7.0, 15.0, 11.0, 10.0, 11.0]]
    data = {
        "videos": [{"id": 5, "file_names": [f"vid/{t:05d}.jpg" for t in range(3)], "height": H, "width": W, "length": 3}],
        "annotations": [
            {"id": 1, "video_id": 5, "category_id": 2, "iscrowd": 0,
             "segmentations": [_compressed_rle(square), None, _uncompressed_rle(square)],
             "areas": [24, None, 24], "bboxes": [[3, 2, 6, 4], None, [3, 2, 6, 4]]},
            {"id": 2, "video_id": 5, "category_id": 4, "segmentations": [polygon, polygon, None], "occlusion": 0.3},
            {"id": 3, "video_id": 5, "category_id": 2, "iscrowd": 1, "segmentations": [None, _compressed_rle(square), None]},
        ],
        "categories": [{"id": 2, "name": "a"}, {"id": 4, "name": "b"}],
    }
    (root / "ann.json").write_text(json.dumps(data))
    return data


def test_round_trip_rle_polygons_null_and_crowd(tmp_path):
    _make_set(tmp_path)
    dataset = YTVISDataset(tmp_path / "ann.json", tmp_path / "JPEGImages")
    assert len(dataset) == 1 and [c["id"] for c in dataset.categories] == [2, 4]
    assert dataset.videos[0]["length"] == 3 and dataset.category_index() == {2: 0, 4: 1}
    video = dataset[0]
    assert (video.video_id, video.name, video.length, video.height, video.width) == (5, "vid", 3, H, W)
    square, _ = _masks()
    first, second, crowd = video.annotations
    assert np.array_equal(first.mask(0), square) and first.mask(1) is None and np.array_equal(first.mask(2), square)
    poly_mask = second.mask(0)
    assert poly_mask.shape == (H, W) and poly_mask[8, 12] and not poly_mask[2, 2]
    assert second.mask(2) is None and second.extra == {"occlusion": 0.3}
    assert crowd.iscrowd == 1 and first.iscrowd == 0 and second.iscrowd == 0
    frame1 = video.frame_instances(1)
    assert frame1.ids.tolist() == [2, 3] and frame1.iscrowd.tolist() == [0, 1]
    assert frame1.masks.shape == (2, H, W)
    frames = list(video.frames())
    assert len(frames) == 3 and frames[2].shape == (H, W, 3) and abs(int(frames[2].mean()) - 60) <= 2


def test_golden_youtube_vis_file_loads():
    dataset = YTVISDataset(DATA / "metrics_example/ytvis_a_small/gt.json", "/nonexistent", check_files=False)
    raw = json.loads((DATA / "metrics_example/ytvis_a_small/gt.json").read_text())
    assert len(dataset) == len(raw["videos"])
    total = sum(len(dataset[i].annotations) for i in range(len(dataset)))
    assert total == len(raw["annotations"])
    for ann in raw["annotations"]:
        video = next(dataset[i] for i in range(len(dataset)) if dataset[i].video_id == ann["video_id"])
        mine = next(a for a in video.annotations if a.id == ann["id"])
        for t, area in enumerate(ann["areas"]):
            mask = mine.mask(t)
            assert (mask is None) == (area is None)
            if mask is not None:
                assert int(mask.sum()) == area


def _broken(data: dict, kind: str) -> dict:
    data = copy.deepcopy(data)
    if kind == "missing_video_id":
        del data["annotations"][0]["video_id"]
    elif kind == "length_disagrees":
        data["videos"][0]["length"] = 4
    elif kind == "segmentations_length":
        data["annotations"][1]["segmentations"].append(None)
    elif kind == "unknown_category":
        data["annotations"][1]["category_id"] = 99
    elif kind == "missing_frame":
        data["videos"][0]["file_names"][1] = "vid/missing.jpg"
    elif kind == "rle_size":
        data["annotations"][0]["segmentations"][0]["size"] = [H + 1, W]
    elif kind == "unknown_video":
        data["annotations"][0]["video_id"] = 77
    elif kind.startswith("annotation_"):  # per-annotation height / width / length, as in real files
        key = kind.split("_")[1]
        data["annotations"][1].update(height=H, width=W, length=3)
        data["annotations"][1][key] = {"height": H + 1, "width": "16", "length": 2}[key]
    return data


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("missing_video_id", r"annotation 1: field 'video_id' is missing"),
        ("length_disagrees", r"video 5: field 'length' is 4 but 'file_names' has 3"),
        ("segmentations_length", r"video 5, annotation 2: field 'segmentations' has 4 entries but the video has 3"),
        ("unknown_category", r"video 5, annotation 2: field 'category_id' = 99 is not in 'categories'"),
        ("missing_frame", r"video 5, field 'file_names'\[1\]: frame file .*missing\.jpg does not exist"),
        ("rle_size", r"video 5, annotation 1, field 'segmentations'\[0\]: RLE 'size'"),
        ("unknown_video", r"annotation 1 \(video 77\): field 'video_id' = 77 names no video"),
        ("annotation_height", rf"video 5, annotation 2: field 'height' = {H + 1} but video 5 has height {H}"),
        ("annotation_width", rf"video 5, annotation 2: field 'width' = '16' but video 5 has width {W}"),
        ("annotation_length", r"video 5, annotation 2: field 'length' = 2; expected the video's frame count 3"),
    ],
)
def test_validation_errors_name_file_video_and_field(tmp_path, kind, expected):
    data = _make_set(tmp_path)
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(_broken(data, kind)))
    with pytest.raises(DataError, match=expected) as info:
        YTVISDataset(path, tmp_path / "JPEGImages")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("length", [3, 1])
def test_annotation_height_width_length_matching_the_video_load(tmp_path, length):
    """Real YouTube-VIS files repeat the video's size in each annotation, and their annotation
    'length' is 1 whatever the video's length: both forms load."""
    data = _make_set(tmp_path)
    for ann in data["annotations"]:
        ann.update(height=H, width=W, length=length)
    path = tmp_path / "sized.json"
    path.write_text(json.dumps(data))
    video = YTVISDataset(path, tmp_path / "JPEGImages")[0]
    assert [a.id for a in video.annotations] == [1, 2, 3]
    assert all(a.extra.get("length") is None for a in video.annotations)


def test_golden_and_synthetic_annotations_carry_matching_sizes(tmp_path):
    """The bundled golden ground truth has per-annotation height/width/length; the synthetic
    generator writes them too. Both pass the new checks."""
    from dvis.data.synthetic import generate

    raw = json.loads((DATA / "metrics_example/ytvis_a_small/gt.json").read_text())
    assert all({"height", "width", "length"} <= set(a) for a in raw["annotations"])
    YTVISDataset(DATA / "metrics_example/ytvis_a_small/gt.json", "/nonexistent", check_files=False)
    ann = generate(tmp_path / "synth", videos=2, frames=4, seed=3, height=32, width=40)
    synth = json.loads(Path(ann).read_text())
    assert synth["annotations"] and all({"height", "width", "length"} <= set(a) for a in synth["annotations"])
    assert len(YTVISDataset(ann, Path(ann).parent / "JPEGImages")) == 2


def test_unreadable_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json is not valid JSON"):
        YTVISDataset(bad, tmp_path)
    with pytest.raises(DataError, match=r"absent\.json does not exist"):
        YTVISDataset(tmp_path / "absent.json", tmp_path)
    no_videos = tmp_path / "no_videos.json"
    no_videos.write_text(json.dumps({"categories": []}))
    with pytest.raises(DataError, match=r"no_videos\.json: top level: field 'videos'"):
        YTVISDataset(no_videos, tmp_path)


def test_test_split_without_annotations_loads(tmp_path):
    data = _make_set(tmp_path)
    del data["annotations"]
    path = tmp_path / "test.json"
    path.write_text(json.dumps(data))
    dataset = YTVISDataset(path, tmp_path / "JPEGImages")
    assert dataset[0].annotations == [] and dataset[0].frame_instances(0).masks.shape == (0, H, W)
