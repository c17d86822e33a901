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
