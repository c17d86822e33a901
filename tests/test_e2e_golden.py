"""Whole released-format checkpoint -> our loader -> online/offline VIS, VPS, VSS (DVIS_E2E_GOLDEN).

Tolerances are the ones the golden README recommends for an exact re-implementation:
VIS: same set of (id, label) pairs, scores within 1e-4, at most 20 differing pixels per mask;
VPS: same segments_infos and ids, at most 50 differing pixels; VSS: at most 50 differing pixels.
"""

from __future__ import annotations

import pytest
import torch

from dvis.compat.checkpoint import load_official
from dvis.compat.release_config import dvis_config_from_official
from dvis.modeling.dvis import DVIS
from golden_files import DATA, golden_files, ids, require_file, torch_golden_with

FILES = golden_files(sorted((DATA / "e2e").glob("*.pt")), "DVIS_E2E_GOLDEN",
                     is_format=torch_golden_with("config", "model", "inputs", "outputs"))
SCORE_TOL, MASK_PIXELS, MAP_PIXELS = 1e-4, 20, 50


def build_model(golden: dict) -> DVIS:
    config = dvis_config_from_official(golden["config"]["values"])
    metadata = golden["config"].get("metadata", {})
    config.inference.thing_classes = thing_classes(metadata)
    model = DVIS(config).eval()
    load_official(model, golden["model"], source="e2e golden")
    return model


def thing_classes(metadata: dict) -> tuple[int, ...]:
    if "thing_dataset_id_to_contiguous_id" in metadata:
        return tuple(sorted(int(v) for v in metadata["thing_dataset_id_to_contiguous_id"].values()))
    return tuple(range(int(metadata.get("num_thing_classes", 0))))


def check_vis(ours, theirs, name: str) -> None:
    ours_by_key = {(int(i), int(l)): k for k, (i, l) in enumerate(zip(ours.ids, ours.labels))}
    theirs_by_key = {(int(i), int(l)): k for k, (i, l) in enumerate(zip(theirs["pred_ids"], theirs["pred_labels"]))}
    assert set(ours_by_key) == set(theirs_by_key), f"{name}: (id, label) sets differ: {sorted(ours_by_key)} vs {sorted(theirs_by_key)}"
    for key, k in theirs_by_key.items():
        mine = ours_by_key[key]
        err = abs(float(ours.scores[mine]) - float(theirs["pred_scores"][k]))
        assert err <= SCORE_TOL, f"{name} {key}: score differs by {err:.3g}"
        pixels = int((ours.masks[mine] != theirs["pred_masks"][k].bool()).sum())
        assert pixels <= MASK_PIXELS, f"{name} {key}: {pixels} mask pixels differ"
    assert tuple(ours.image_size) == tuple(theirs["image_size"])


def check_vps(ours, theirs, name: str) -> None:
    expected = [{"id": int(s["id"]), "isthing": bool(s["isthing"]), "category_id": int(s["category_id"])} for s in theirs["segments_infos"]]
    assert ours.segments_infos == expected, f"{name}: segments differ"
    assert [int(i) for i in ours.ids] == [int(i) for i in theirs["pred_ids"]], f"{name}: ids differ"
    pixels = int((ours.masks != theirs["pred_masks"]).sum())
    assert pixels <= MAP_PIXELS, f"{name}: {pixels} pixels of the id map differ"


def check_vss(ours, theirs, name: str) -> None:
    pixels = int((ours.masks != theirs["pred_masks"]).sum())
    assert pixels <= MAP_PIXELS, f"{name}: {pixels} pixels of the class map differ"


CHECKS = {"vis": check_vis, "vps": check_vps, "vss": check_vss}


def check_against_release(golden: dict) -> int:
    """Run every recorded (mode, task) output; returns how many were compared."""
    model = build_model(golden)
    frames = golden["inputs"]["frames_uint8_tchw"]
    size = (int(golden["inputs"]["height"]), int(golden["inputs"]["width"]))
    compared = 0
    for key, expected in golden["outputs"].items():
        mode, task = key.split("_")
        result = model([frames], [size], mode=mode, task=task)[0]
        CHECKS[task](result, expected, key)
        compared += 1
    return compared


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_release_checkpoint_reproduces_release_outputs(path):
    require_file(path)
    golden = torch.load(path, weights_only=True)
    assert {"offline_vis", "online_vis"} <= set(golden["outputs"]), f"{path}: VIS outputs missing"
    assert check_against_release(golden) == len(golden["outputs"])


def test_a_golden_that_does_not_match_fails():
    golden = torch.load(FILES[0], weights_only=True)
    golden["outputs"] = {"offline_vis": golden["outputs"]["offline_vis"]}
    golden["outputs"]["offline_vis"]["pred_scores"] = golden["outputs"]["offline_vis"]["pred_scores"] + 1e-3
    with pytest.raises(AssertionError, match="score differs"):
        check_against_release(golden)


def test_resize_reproduces_the_release_data_mapper():
    from dvis.inference.transforms import resize_video

    for path in FILES:
        require_file(path)
        golden = torch.load(path, weights_only=True)
        inputs = golden["inputs"]
        if "original_video_uint8_thwc" not in inputs:
            continue
        values = golden["config"]["values"]
        resized = resize_video(inputs["original_video_uint8_thwc"], values["MIN_SIZE_TEST"], values["MAX_SIZE_TEST"])
        assert torch.equal(resized, inputs["frames_uint8_tchw"]), f"{path}: resized frames differ"
