"""Class index -> dataset category id and name: release presets (OVIS / YouTube-VIS ids 1..K, VIPSeg
ids 0..123), a model folder's classes.json, and the default k + 1, in results files and overlay labels."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from dvis.cli import main
from dvis.errors import DataError
from dvis.inference import registry
from dvis.inference.categories import Categories, model_categories
from dvis.inference.predictor import VideoPredictor
from dvis.inference.render import OverlayVideo
from dvis.compat import presets
from dvis.compat.categories import VIPSEG_THING_CLASSES, dataset_categories
from dvis.compat.presets import PRESETS, build_config, get_preset
from golden_files import DATA
from inference_helpers import random_frames, save_tiny_model, tiny_model, write_frame_folder

FIRST_NAMES = {"ovis": "Person", "ytvis19": "person", "ytvis21": "airplane", "vipseg": "wall"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_its_datasets_categories(name, tmp_path):
    preset = get_preset(name)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    categories = model_categories(registry.locate_model(name, weights), preset.num_classes)
    first_id = 0 if preset.dataset == "vipseg" else 1
    assert categories.ids == tuple(range(first_id, first_id + preset.num_classes))
    assert len(set(categories.names)) == preset.num_classes
    assert categories.names[0] == FIRST_NAMES[preset.dataset]
    with pytest.raises(DataError, match=f"release preset '{name}' lists {preset.num_classes} classes"):
        model_categories(registry.locate_model(name, weights), preset.num_classes + 1)


def test_known_category_names():
    ovis, ytvis19, ytvis21 = (dict(dataset_categories(d)) for d in ("ovis", "ytvis19", "ytvis21"))
    assert (ovis[1], ovis[12], ovis[25]) == ("Person", "Poultry", "Vehical")  # the dataset's spelling
    assert (ytvis19[6], ytvis19[40]) == ("sedan", "tennis_racket")
    assert (ytvis21[26], ytvis21[40]) == ("person", "zebra")
    with pytest.raises(Exception, match="no categories recorded for dataset 'coco'"):
        dataset_categories("coco")


def test_vipseg_names_agree_with_the_bundled_vipseg_categories():
    vipseg = dict(dataset_categories("vipseg"))
    gt = json.loads((DATA / "metrics_example" / "vpq_a_small" / "gt" / "panoptic_gt_VIPSeg_val.json").read_text())
    assert gt["categories"]
    for category in gt["categories"]:
        assert vipseg[category["id"]] == category["name"], category
    assert len(VIPSEG_THING_CLASSES) == 58 and set(VIPSEG_THING_CLASSES) < set(vipseg)


def tiny_preset(monkeypatch, name: str, **inference):
    """Make the release preset ``name`` build (and "load") a tiny random model with its classes."""
    preset = get_preset(name)
    model = tiny_model(num_classes=preset.num_classes, online_only=preset.mode == "online")
    model.config.inference = dataclasses.replace(build_config(name).inference, min_size_test=64, **inference)
    monkeypatch.setattr(presets, "build_config", lambda _: copy.deepcopy(model.config))
    monkeypatch.setattr(registry, "_load_release_weights", lambda m, _: m.load_state_dict(model.state_dict()))
    return model


def segment(*args) -> int:
    return main(["segment", *map(str, args), "--quiet"])


def test_vipseg_preset_writes_vipseg_category_ids(tmp_path, monkeypatch):
    name = "dvis-online-vipseg-r50-720p"
    model = tiny_preset(monkeypatch, name, object_mask_threshold=0.0, overlap_threshold=0.0)
    write_frame_folder(tmp_path / "clip", random_frames(3))
    (tmp_path / "w.pth").write_bytes(b"released weights")
    out = tmp_path / "out"
    assert segment(tmp_path / "clip", "--model", name, "--weights", tmp_path / "w.pth", "--out", out, "--no-render") == 0
    reference = VideoPredictor(model)(tmp_path / "clip")
    classes = {s["id"]: s["category_id"] for s in reference.segments_infos}
    frames = json.loads((out / "pred.json").read_text())["annotations"][0]["annotations"]
    written = [(s["id"], s["category_id"]) for frame in frames for s in frame["segments_info"]]
    assert written, "the test needs panoptic segments"
    assert all(category == classes[segment_id] for segment_id, category in written)  # VIPSeg id = class index


def test_ytvis_preset_writes_ids_from_one_and_draws_names(tmp_path, monkeypatch):
    name = "dvis-offline-ytvis19-r50"
    model = tiny_preset(monkeypatch, name)
    texts = []
    original = OverlayVideo.add
    monkeypatch.setattr(OverlayVideo, "add", lambda self, masks, colours, labels: (
        texts.extend(labels), original(self, masks, colours, labels)))
    write_frame_folder(tmp_path / "clip", random_frames(3))
    (tmp_path / "w.pth").write_bytes(b"released weights")
    out = tmp_path / "out"
    assert segment(tmp_path / "clip", "--model", name, "--weights", tmp_path / "w.pth", "--out", out,
                   "--render-threshold", "0") == 0
    reference = VideoPredictor(model)(tmp_path / "clip")
    results = json.loads((out / "results.json").read_text())
    assert [r["category_id"] for r in results] == [label + 1 for label in reference.labels.tolist()]
    names = dict(dataset_categories("ytvis19"))
    ids = {str(r["track_id"]) for r in results}
    labels = [text.split(" ") for text in texts]  # "id class score"
    assert texts and all(len(parts) == 3 and parts[0] in ids for parts in labels)
    assert {parts[1] for parts in labels} <= {names[r["category_id"]] for r in results}
    predictor = VideoPredictor.from_pretrained(name, weights=tmp_path / "w.pth", device="cpu")
    assert predictor.categories.names[0] == "person" and predictor.categories.ids[0] == 1


def test_model_folder_classes_json_and_the_default(tmp_path):
    folder = save_tiny_model(tmp_path / "m", num_classes=3)
    assert model_categories(registry.locate_model(folder), 3) == Categories.default(3)
    assert Categories.default(3).names == ("class 1", "class 2", "class 3")
    (folder / "classes.json").write_text(json.dumps([{"id": 0, "name": "bg"}, {"id": 5, "name": "cat"},
                                                     {"id": 9, "name": "dog"}]))
    assert model_categories(registry.locate_model(folder), 3) == Categories((0, 5, 9), ("bg", "cat", "dog"))
    write_frame_folder(tmp_path / "clip", random_frames(2))
    out = tmp_path / "out"
    assert segment(tmp_path / "clip", "--model", folder, "--mode", "online", "--out", out, "--no-render") == 0
    assert {r["category_id"] for r in json.loads((out / "results.json").read_text())} <= {0, 5, 9}
    with pytest.raises(DataError, match="classes.json lists 3 classes but the model predicts 4"):
        model_categories(registry.locate_model(folder), 4)
    (folder / "classes.json").write_text(json.dumps([{"id": 1}]))
    with pytest.raises(DataError, match=r"classes.json: expected a JSON list of \{'id', 'name'\} objects"):
        model_categories(registry.locate_model(folder), 1)
