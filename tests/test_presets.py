"""Release presets: every preset builds, and the ones with a bundled released layout match it.

Layout files: the bundled ``tests/data/official_layout/official_keys_*.json`` plus every such file
under ``$DVIS_OFFICIAL_LAYOUT`` (a file or folder). Each names its release yaml (``config_file``);
the preset built from that yaml must give the same config as the layout's resolved values.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch

from dvis.compat.release_config import dvis_config_from_official
from dvis.errors import ConfigError
from dvis.modeling.dvis import DVISConfig
from dvis.compat.categories import VIPSEG_THING_CLASSES
from dvis.compat.presets import (
    PRESETS,
    ReleasePreset,
    build_config,
    get_preset,
    release_values,
)
from dvis.modeling.refiner import TemporalRefiner
from dvis.modeling.tracker import ReferringTracker
from golden_files import DATA, golden_files, ids

LAYOUTS = golden_files(sorted((DATA / "official_layout").glob("official_keys_*.json")), "DVIS_OFFICIAL_LAYOUT",
                       pattern="official_keys_*.json")
NAME = re.compile(r"^(dvis-(online|offline)|minvis)-(ovis|ytvis19|ytvis21|vipseg)-(r50|swinl)(-720p|-cocopseudo)?$")


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def preset_for_file(config_file: str) -> ReleasePreset:
    matches = [p for p in PRESETS.values() if p.config_file == config_file]
    assert len(matches) == 1, f"expected one preset for {config_file}, found {[p.name for p in matches]}"
    return matches[0]


# ---------------------------------------------------------------------------------- every preset
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_consistent_config(name):
    preset = get_preset(name)
    config = build_config(name)
    assert isinstance(config, DVISConfig)
    match = NAME.match(name)
    assert match, name
    assert preset.name == name
    assert preset.mode == (match.group(2) or "minvis")
    assert preset.dataset == match.group(3)
    assert preset.backbone == {"r50": "r50", "swinl": "swin-l"}[match.group(4)]
    assert config.segmenter.backbone == {"r50": "resnet", "swin-l": "swin"}[preset.backbone]
    assert config.segmenter.num_classes == preset.num_classes
    assert config.segmenter.num_queries == preset.num_queries == (200 if preset.backbone == "swin-l" else 100)
    assert (config.tracker is not None) == (preset.mode != "minvis")
    assert (config.refiner is not None) == (preset.mode == "offline")
    for stage in (config.tracker, config.refiner):
        if stage is not None:
            assert (stage.num_layers, stage.num_classes, stage.hidden_dim) == (6, preset.num_classes, 256)
    if config.tracker is not None:
        assert config.tracker.matching == "dvis-release"
    inference = config.inference
    inference.validate()
    assert (inference.mode, inference.task) == (preset.mode, preset.task)
    assert (inference.window_size, inference.max_num) == (preset.window_size, preset.max_num)
    assert (inference.min_size_test, inference.max_size_test) == (preset.min_size_test, preset.max_size_test)
    assert inference.thing_classes == preset.thing_classes
    assert build_config(preset) == config


def test_names_cover_every_released_model_yaml():
    files = {p.config_file for p in PRESETS.values()}
    assert len(files) == len(PRESETS) == 33
    for dataset in ("ovis", "ytvis19", "ytvis21"):
        for mode in ("dvis-online", "dvis-offline", "minvis"):
            for backbone in ("r50", "swinl"):
                assert f"{mode}-{dataset}-{backbone}" in PRESETS
    for mode in ("dvis-online", "dvis-offline", "minvis"):
        assert f"{mode}-vipseg-r50-720p" in PRESETS and f"{mode}-vipseg-swinl" in PRESETS
        assert f"{mode}-vipseg-r50" not in PRESETS  # the release has VIPSeg R50 only at 720p
        assert f"{mode}-ovis-r50-720p" in PRESETS and f"{mode}-ovis-swinl-720p" in PRESETS


def test_class_counts_tasks_and_thing_classes():
    for preset in PRESETS.values():
        expected = {"ovis": 25, "ytvis19": 40, "ytvis21": 40, "vipseg": 124}[preset.dataset]
        assert preset.num_classes == expected
        assert preset.task == ("vps" if preset.dataset == "vipseg" else "vis")
        if preset.task == "vis":
            assert preset.thing_classes == tuple(range(expected))
        else:
            assert preset.thing_classes == VIPSEG_THING_CLASSES
    assert len(VIPSEG_THING_CLASSES) == 58 and len(set(VIPSEG_THING_CLASSES)) == 58
    assert all(0 <= c < 124 for c in VIPSEG_THING_CLASSES)


def test_vipseg_thing_classes_agree_with_the_bundled_vipseg_categories():
    gt = json.loads((DATA / "metrics_example" / "vpq_a_small" / "gt" / "panoptic_gt_VIPSeg_val.json").read_text())
    assert gt["categories"]
    for category in gt["categories"]:
        assert (category["id"] in VIPSEG_THING_CLASSES) == bool(category["isthing"]), category


def test_inference_values_follow_the_release_yaml_chain():
    for preset in PRESETS.values():
        assert preset.max_num == (10 if preset.dataset.startswith("ytvis") else 20)
        assert preset.window_size == 3
        assert preset.max_size_test == 1333
        assert preset.object_mask_threshold == preset.overlap_threshold == 0.8
        if preset.dataset == "vipseg" or preset.name.endswith("-720p"):
            assert preset.min_size_test == 720
        else:
            assert preset.min_size_test == (480 if preset.backbone == "swin-l" else 360)


def test_training_values_match_the_paper_schedule():
    """The released configs: AdamW 1e-4, wd 0.05, full-model clipping 0.01, batch 8, clips of 5 / 21."""
    iterations = {"ovis": (20000, 14000), "ytvis19": (40000, 28000), "ytvis21": (40000, 28000),
                  "vipseg": (20000, 14000)}
    for preset in PRESETS.values():
        train = preset.train
        assert (train["SOLVER.OPTIMIZER"], train["SOLVER.BASE_LR"], train["SOLVER.WEIGHT_DECAY"]) == ("ADAMW", 1e-4, 0.05)
        assert train["SOLVER.CLIP_GRADIENTS.ENABLED"] and train["SOLVER.CLIP_GRADIENTS.CLIP_TYPE"] == "full_model"
        assert (train["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"], train["SOLVER.CLIP_GRADIENTS.NORM_TYPE"]) == (0.01, 2.0)
        assert train["SOLVER.AMP.ENABLED"] and train["SOLVER.IMS_PER_BATCH"] == 8
        frames = {"minvis": 1, "online": 5, "offline": 21}[preset.mode]
        assert train["INPUT.SAMPLING_FRAME_NUM"] == frames
        assert train["INPUT.REVERSE_AGU"] == (preset.mode == "offline")
        if preset.mode != "minvis":
            assert train["INPUT.SAMPLING_FRAME_RANGE"] == {5: 2, 21: 10}[frames]
            max_iter, step = iterations[preset.dataset]
            assert (train["SOLVER.MAX_ITER"], train["SOLVER.STEPS"]) == (max_iter, (step,))
        if preset.mode == "offline":
            assert train["INPUT.CROP.ENABLED"]
        uses_coco = "image_instance" in train["DATASETS.DATASET_TYPE"]
        assert uses_coco == (preset.dataset.startswith("ytvis") or preset.name.endswith("-cocopseudo"))
        assert len(train["DATASETS.TRAIN"]) == len(train["DATASETS.DATASET_RATIO"]) == len(train["DATASETS.DATASET_TYPE"])


def test_train_values_are_read_only_and_test_keys_stay_out():
    train = get_preset("dvis-offline-ovis-r50").train
    with pytest.raises(TypeError):
        train["SOLVER.BASE_LR"] = 1.0  # type: ignore[index]
    assert "INPUT.MIN_SIZE_TEST" not in train and "MODEL.SEM_SEG_HEAD.NUM_CLASSES" not in train
    assert train["INPUT.PSEUDO.CROP.SIZE"] == (384, 600) and train["DATASETS.TRAIN"] == ("ovis_train",)


# ------------------------------------------------------------------------------- released layouts
@pytest.mark.parametrize("path", LAYOUTS, ids=ids(LAYOUTS))
def test_preset_equals_the_released_layout_config(path):
    layout = json.loads(path.read_text())
    official = dvis_config_from_official(layout["config"])
    preset = preset_for_file(layout["config"]["config_file"])
    built = build_config(preset)
    assert built.segmenter == official.segmenter
    assert built.tracker == official.tracker
    assert built.refiner == official.refiner
    # The release's VIS configs carry no thing list (all classes are things); everything else equal.
    assert replace(built.inference, thing_classes=()) == replace(official.inference, thing_classes=())
    assert built.inference.min_size_test == official.inference.min_size_test
    counts = layout["param_counts"]
    with torch.device("meta"):
        tracker = ReferringTracker(built.tracker)
        refiner = TemporalRefiner(built.refiner) if built.refiner is not None else None
    assert count(tracker) == counts["tracker_params"]
    assert (count(refiner) if refiner is not None else 0) == counts["refiner_params"]


@pytest.mark.parametrize("name, tracker_params, refiner_params", [
    ("dvis-offline-ovis-r50", 9_677_082, 14_411_291),
    ("dvis-offline-ovis-swinl", 9_677_082, 14_411_291),
    ("dvis-offline-ytvis19-r50", 9_680_937, 14_415_146),
    ("dvis-offline-ytvis21-swinl", 9_680_937, 14_415_146),
])
def test_tracker_and_refiner_parameter_counts(name, tracker_params, refiner_params):
    config = build_config(name)
    with torch.device("meta"):
        assert count(ReferringTracker(config.tracker)) == tracker_params
        assert count(TemporalRefiner(config.refiner)) == refiner_params


# ----------------------------------------------------------------------------------------- errors
def test_unknown_name_lists_close_matches_and_all_names():
    with pytest.raises(ConfigError) as error:
        get_preset("dvis-offline-ovis-r51")
    message = str(error.value)
    assert "'dvis-offline-ovis-r51'" in message and "Did you mean: dvis-offline-ovis-r50" in message
    assert all(name in message for name in PRESETS)
    with pytest.raises(ConfigError, match="Known presets: dvis-offline-ovis-r50"):
        build_config("nothing-like-it")
    with pytest.raises(ConfigError, match="no recorded release config"):
        release_values("configs/ovis/DVIS_Online_R101.yaml")


def test_docs_table_lists_every_preset_with_its_yaml():
    rows = (DATA.parent.parent / "docs" / "presets.md").read_text().splitlines()
    for preset in PRESETS.values():
        row = [r for r in rows if r.startswith(f"| `{preset.name}` |")]
        assert len(row) == 1 and f"`{preset.config_file}`" in row[0], preset.name
        cells = [c.strip() for c in row[0].split("|")[1:-1]]
        assert cells[1:5] == [str(preset.num_classes), str(preset.num_queries),
                              f"{preset.min_size_test}/{preset.max_size_test}", str(preset.max_num)], preset.name
