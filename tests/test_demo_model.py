"""The shipped ``synthetic-demo`` model (issue 6.5 / 7.4): complete, small, documented, loadable by
name, and good enough on the synthetic benchmark that the demo's AP means something."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from test_train_common import one_thread  # noqa: F401  (autouse: one intra-op thread, restored after)

from dvis.data.synthetic import THING_CATEGORIES, generate
from dvis.data.ytvis import YTVISDataset
from dvis.evaluation.ytvis import evaluate_tracks
from dvis.evaluation.ytvis_data import load_ground_truth, parse_results
from dvis.inference.predictor import VideoPredictor
from dvis.inference.registry import registered_folder
from dvis.modeling.io import load_config

FOLDER = registered_folder("synthetic-demo")


def test_the_demo_model_is_shipped_complete_and_under_20_mb():
    names = {path.name for path in FOLDER.iterdir()}
    assert {"config.yaml", "model.safetensors", "classes.json", "README.md", "training_segmenter.yaml",
            "training_tracker.yaml", "training_refiner.yaml"} <= names
    assert sum(path.stat().st_size for path in FOLDER.iterdir()) <= 20 * 2**20
    config = load_config(FOLDER / "config.yaml")
    assert config.tracker is not None and config.refiner is not None  # offline DVIS
    assert config.segmenter.num_classes == len(THING_CATEGORIES)
    classes = json.loads((FOLDER / "classes.json").read_text())
    assert classes == [{"id": c["id"], "name": c["name"]} for c in THING_CATEGORIES]


def card_ap(mode_label: str) -> float:
    card = (FOLDER / "README.md").read_text()
    row = re.search(rf"^\| {re.escape(mode_label)} \| ([0-9.]+) \|", card, re.MULTILINE)
    assert row, f"model card has no metrics row {mode_label!r}"
    return float(row.group(1))


def test_the_model_card_shows_minvis_below_online_below_offline():
    minvis, online, offline = (card_ap(label) for label in (
        "MinVIS (segmenter only)", "online DVIS (tracker)", "offline DVIS (tracker + refiner)"))
    assert minvis < online < offline


@pytest.fixture(scope="module")
def light_video(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-video")
    return generate(root, videos=1, frames=12, seed=11, height=128, width=128, objects=(2, 3), occlusion="light")


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_the_demo_model_loads_by_name_and_finds_the_objects(light_video, mode):
    predictor = VideoPredictor.from_pretrained("synthetic-demo", device="cpu", mode=mode)
    video = YTVISDataset(light_video, light_video.parent / "JPEGImages")[0]
    instances = predictor(np.stack(list(video.frames())))
    assert instances.num_frames == 12 and instances.image_size == (128, 128)
    assert set(instances.labels.tolist()) <= set(range(len(THING_CATEGORIES)))
    gt = load_ground_truth(light_video)
    metrics = evaluate_tracks(gt, parse_results(instances.to_ytvis(video.video_id, gt.category_ids), gt))
    # a model at chance level (or a broken loader) scores ~0 here; the trained one well above
    assert metrics["AP50"] > 0.3, metrics
