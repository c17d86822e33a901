"""VIPSeg panoptic reader: the golden set, id encoding, validation errors."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dvis.data.vipseg import VIPSegDataset, id_to_rgb, rgb_to_id
from dvis.errors import DataError

GT = Path(__file__).parent / "data" / "metrics_example" / "vpq_a_small" / "gt"
JSON = GT / "panoptic_gt_VIPSeg_val.json"


def test_id_encoding_round_trip():
    ids = np.array([[0, 1, 255], [256, 65536, 16777215]])
    rgb = id_to_rgb(ids)
    assert rgb[1, 0].tolist() == [0, 1, 0] and rgb[1, 1].tolist() == [0, 0, 1]
    assert np.array_equal(rgb_to_id(rgb), ids)


def test_golden_set_reads_with_areas_and_thing_stuff_split():
    dataset = VIPSegDataset(JSON, GT / "panomasksRGB")
    raw = json.loads(JSON.read_text())
    assert len(dataset) == len(raw["annotations"])
    assert dataset.thing_ids == {c["id"] for c in raw["categories"] if c["isthing"]}
    assert dataset.stuff_ids == {c["id"] for c in raw["categories"] if not c["isthing"]}
    for video, ann in zip((dataset[i] for i in range(len(dataset))), raw["annotations"]):
        assert video.video_id == ann["video_id"] and video.length == len(ann["annotations"])
        for t, frame in enumerate(ann["annotations"]):
            ids = video.panoptic(t)
            assert ids.shape == (video.height, video.width)
            for seg in frame["segments_info"]:
                assert int((ids == seg["id"]).sum()) == seg["area"]
            inst = video.frame_instances(t)
            assert set(inst.ids.tolist()) == {s["id"] for s in frame["segments_info"]}
            assert all(s["isthing"] == (s["category_id"] in dataset.thing_ids) for s in video.frames_info[t].segments_info)


def _copy_set(tmp_path: Path) -> tuple[Path, dict]:
    shutil.copytree(GT / "panomasksRGB", tmp_path / "panomasksRGB")
    return tmp_path / "pan.json", json.loads(JSON.read_text())


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("missing_video_id", r"annotations\[0\]: field 'video_id' is missing"),
        ("unknown_category", r"video 101_synthA, frame 0, field 'segments_info'\[0\]: 'category_id' = 999"),
        ("missing_png", r"video 101_synthA, frame 2, field 'file_name': panoptic file .*00000010\.png does not exist"),
        ("frame_count", r"video 101_synthA: field 'annotations' has 9 frames but 'videos' lists 10"),
    ],
)
def test_validation_errors_name_file_video_and_field(tmp_path, kind, expected):
    path, data = _copy_set(tmp_path)
    data = copy.deepcopy(data)
    if kind == "missing_video_id":
        del data["annotations"][0]["video_id"]
    elif kind == "unknown_category":
        data["annotations"][0]["annotations"][0]["segments_info"][0]["category_id"] = 999
    elif kind == "missing_png":
        (tmp_path / "panomasksRGB" / "101_synthA" / "00000010.png").unlink()
    elif kind == "frame_count":
        data["annotations"][0]["annotations"].pop()
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=expected) as info:
        VIPSegDataset(path, tmp_path / "panomasksRGB")
    assert str(path) in str(info.value)


def _touch_images(root: Path, data: dict) -> list[Path]:
    """Empty files where the frames belong: the check is a stat, so they need no pixels."""
    paths = []
    for video in data["videos"]:
        for image in video["images"]:
            path = root / str(video["video_id"]) / (Path(image["file_name"]).stem + ".jpg")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            paths.append(path)
    return paths


def test_frame_images_are_checked_when_an_image_root_is_given(tmp_path):
    _path, data = _copy_set(tmp_path)
    images = tmp_path / "images"
    paths = _touch_images(images, data)
    dataset = VIPSegDataset(JSON, GT / "panomasksRGB", images)  # empty files: nothing is decoded
    assert dataset[0].file_names[0] == paths[0]
    missing = images / "101_synthA" / "00000010.jpg"
    missing.unlink()
    with pytest.raises(DataError) as info:
        VIPSegDataset(JSON, GT / "panomasksRGB", images)
    message = str(info.value)
    assert str(JSON) in message and "video 101_synthA, frame 2" in message
    assert "'file_name'" in message and f"frame image {missing} does not exist" in message
    VIPSegDataset(JSON, GT / "panomasksRGB", images, check_images=False)  # opt out
    VIPSegDataset(JSON, GT / "panomasksRGB")  # no image root: nothing to check
    with pytest.raises(DataError, match=r"frame image .*00000000\.png does not exist"):
        VIPSegDataset(JSON, GT / "panomasksRGB", images, image_ext=".png")  # the extension is applied
