"""Evaluation metrics vs the public evaluation code's numbers.

Every set under tests/data/metrics_example/ and, when DVIS_METRICS_GOLDEN is set, every set
(one folder each) under that path. The kind comes from the folder name prefix (ytvis_, vpq_,
stq_) and must agree with the files present; anything else fails with a clear message.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from dvis.evaluation import stq as stq_mod
from dvis.evaluation import vpq as vpq_mod
from dvis.evaluation.vipseg_io import iter_videos, open_set
from dvis.evaluation.ytvis import IOU_THRESHOLDS, _tube_iou_matrix, evaluate_tracks
from dvis.evaluation.ytvis_data import load_ground_truth, load_results

DATA = Path(__file__).parent / "data" / "metrics_example"
ENV = "DVIS_METRICS_GOLDEN"
TOL = 1e-6

REQUIRED = {
    "ytvis": ("gt.json", "pred.json", "expected.json"),
    "vpq": ("gt", "pred/pred.json", "pred/pan_pred", "expected.json"),
    "stq": ("inputs.npz", "expected.json"),
}


def set_kind(folder: Path) -> str:
    """The set's kind from its name prefix, checked against its files; raises ValueError otherwise."""
    prefix = folder.name.split("_", 1)[0]
    if prefix not in REQUIRED:
        raise ValueError(f"{folder}: unknown metrics golden set: the name must start with one of "
                         f"{sorted(k + '_' for k in REQUIRED)}")
    missing = [name for name in REQUIRED[prefix] if not (folder / name).exists()]
    if missing:
        raise ValueError(f"{folder}: a {prefix}_ set needs {list(REQUIRED[prefix])}; missing {missing}")
    return prefix


def _sets_under(path: Path) -> list[Path]:
    if (path / "expected.json").is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir())


SHARED = Path(__file__).resolve().parents[2] / "shared" / "goldens" / "metrics_example"


def _differs(shared: Path, bundled: Path) -> bool:
    return not bundled.is_dir() or (shared / "expected.json").read_bytes() != (bundled / "expected.json").read_bytes()


def golden_sets() -> list[Path]:
    """Bundled sets, sets in ../shared/goldens/metrics_example/ that are not bundled copies, then the
    env var's sets. A set env var under which no set folder is found adds a path that fails its test."""
    sets = sorted(p for p in DATA.iterdir() if p.is_dir())
    if SHARED.is_dir():
        sets += [p for p in sorted(SHARED.iterdir())
                 if p.is_dir() and (p / "expected.json").is_file() and _differs(p, DATA / p.name)]
    extra = os.environ.get(ENV)
    if extra:
        path = Path(extra)
        found = _sets_under(path) if path.is_dir() else []
        what = "is not a folder" if not path.is_dir() else "holds no set folders"
        sets.extend(found or [path / f"<{ENV}={extra} {what}>"])
    return sets


SETS = golden_sets()


def close(actual, expected, what: str) -> None:
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        assert actual is None or (isinstance(actual, float) and math.isnan(actual)), f"{what}: {actual} vs undefined"
        return
    assert actual is not None, f"{what}: undefined, expected {expected}"
    assert abs(float(actual) - float(expected)) <= TOL, f"{what}: {actual} vs {expected}"


# ----------------------------------------------------------------------------- ytvis


def check_ytvis(folder: Path) -> None:
    expected = json.loads((folder / "expected.json").read_text())
    gt = load_ground_truth(folder / "gt.json")
    dets = load_results(folder / "pred.json", gt)
    result = evaluate_tracks(gt, dets)
    params = expected.get("params", {})
    if "iouThrs" in params:
        np.testing.assert_array_equal(IOU_THRESHOLDS, np.asarray(params["iouThrs"]))
    assert len(expected["stats"]) == 12
    for name, got, want in zip(expected.get("stats_names", range(12)), result["stats"], expected["stats"]):
        close(got, want, f"{folder.name} {name}")
    per_cat = {str(k): v for k, v in result["per_category"].items()}
    for cat, want in expected["per_category_ap"].items():
        close(per_cat[str(cat)], None if want == -1 else want, f"{folder.name} AP of category {cat}")
    if "recall_TKAM" in expected:
        np.testing.assert_allclose(result["recall"][:, :, :4], np.asarray(expected["recall_TKAM"]), atol=TOL, rtol=0)
    arrays = folder / "eval_arrays.npz"
    if arrays.is_file():
        with np.load(arrays) as z:
            np.testing.assert_allclose(result["precision"][..., :4, :], z["precision"], atol=TOL, rtol=0)
    for entry in expected.get("iou_matrices", []):
        _check_iou_matrix(gt, dets, entry, folder.name)


def _check_iou_matrix(gt, dets, entry: dict, name: str) -> None:
    by_id = {d.id: d for d in dets}
    gts = {g.id: g for g in gt.tracks}
    rows = [by_id[i] for i in entry["dt_ids"]]
    cols = [gts[i] for i in entry["gt_ids"]]
    got = _tube_iou_matrix(rows, cols)
    want = np.asarray(entry["iou"], dtype=np.float64).reshape(len(rows), len(cols))
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0,
                               err_msg=f"{name}: IoUs of video {entry['video_id']} category {entry['category_id']}")


# ----------------------------------------------------------------------------- vpq


def _vpq_set(folder: Path):
    jsons = sorted((folder / "gt").glob("*.json"))
    assert len(jsons) == 1, f"{folder}/gt must hold exactly one ground-truth JSON, found {jsons}"
    masks = [p for p in (folder / "gt").iterdir() if p.is_dir()]
    assert len(masks) == 1, f"{folder}/gt must hold exactly one PNG folder, found {masks}"
    return open_set(jsons[0], masks[0], folder / "pred")


def _compare_window_summary(got: dict, want: dict, what: str) -> None:
    for part in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq", "n"):
            if part in want and key in want[part]:
                close(got[part][key], want[part][key], f"{what} {part} {key}")
    for cat, values in want.get("per_class", {}).items():
        for key, value in values.items():
            close(got["per_class"][int(cat)][key], value, f"{what} class {cat} {key}")


def check_vpq(folder: Path) -> None:
    expected = json.loads((folder / "expected.json").read_text())
    main, paper = expected["official_main"], expected["k_0_5_10_15"]
    result = vpq_mod.evaluate_set(_vpq_set(folder), tuple(main["nframes"]), tuple(paper["nframes"]))
    for block, got in ((main, result), (paper, result["k_0_5_10_15"])):
        for key, name in (("vpq_all", "All"), ("vpq_thing", "Things"), ("vpq_stuff", "Stuff")):
            for n, want in zip(block["nframes"], block[key]):
                close(100 * result["windows"][n][name]["pq"], want, f"{folder.name} {key} n={n}")
        close(got["VPQ"], block["final"]["vpq_all"], f"{folder.name} final vpq_all")
        close(got["VPQ_thing"], block["final"]["vpq_thing"], f"{folder.name} final vpq_thing")
        close(got["VPQ_stuff"], block["final"]["vpq_stuff"], f"{folder.name} final vpq_stuff")
    for label, want in expected.get("per_window_details", {}).items():
        n = int(label.split("=")[1].split()[0])
        _compare_window_summary(result["windows"][n], want, f"{folder.name} {label}")


# ----------------------------------------------------------------------------- stq


def check_stq(folder: Path) -> None:
    expected = json.loads((folder / "expected.json").read_text())
    c = expected["constructor"]
    metric = stq_mod.STQuality(c["num_classes"], c["things_list"], c["ignore_label"], c["label_bit_shift"],
                               c["offset"])
    with np.load(folder / "inputs.npz") as z:
        for seq in expected["sequence_ids"]:
            gt, pred = z[f"gt_seq{seq}"], z[f"pred_seq{seq}"]
            for t in range(len(gt)):
                metric.update(gt[t], pred[t], seq)
    result = metric.result()
    close(result["STQ"], expected["STQ"], f"{folder.name} STQ")
    close(result["AQ"], expected["AQ"], f"{folder.name} AQ")
    close(result["SQ"], expected.get("SQ_IoU", expected.get("IoU")), f"{folder.name} IoU")
    for key in ("STQ_per_seq", "AQ_per_seq", "IoU_per_seq"):
        if key in expected:
            np.testing.assert_allclose(result[key], expected[key], atol=TOL, rtol=0, err_msg=f"{folder.name} {key}")
    if "Length_per_seq" in expected:
        assert result["Length_per_seq"] == expected["Length_per_seq"]
    for cls, want in expected.get("per_class_iou_total", {}).items():
        got = result["per_class_iou"][int(cls)]
        close(got["iou"], want["iou"], f"{folder.name} class {cls} IoU")
        assert (got["tp"], got["fp"], got["fn"]) == (want["tp"], want["fp"], want["fn"]), f"{folder.name} class {cls}"
    source = folder.parent / expected.get("source_set", "")
    if expected.get("source_set") and source.is_dir():
        check_label_maps(source, folder)


def check_label_maps(vpq_folder: Path, stq_folder: Path) -> None:
    """Our VIPSeg -> label-map conversion reproduces the set's inputs.npz exactly."""
    expected = json.loads((stq_folder / "expected.json").read_text())
    with np.load(stq_folder / "inputs.npz") as z:
        videos = list(iter_videos(_vpq_set(vpq_folder)))
        assert [v for v, _ in videos] == expected["sequence_video_ids"]
        for seq, (_video, frames) in zip(expected["sequence_ids"], videos):
            gt, pred = stq_mod.video_label_maps(frames)
            np.testing.assert_array_equal(gt, z[f"gt_seq{seq}"])
            np.testing.assert_array_equal(pred, z[f"pred_seq{seq}"])


CHECKS = {"ytvis": check_ytvis, "vpq": check_vpq, "stq": check_stq}


@pytest.mark.parametrize("folder", SETS, ids=[str(s) for s in SETS])
def test_metrics_golden(folder: Path) -> None:
    assert folder.is_dir(), f"not a metrics golden set: {folder}"
    CHECKS[set_kind(folder)](folder)


def test_bundled_sets_cover_every_kind() -> None:
    kinds = {set_kind(p) for p in DATA.iterdir() if p.is_dir()}
    assert kinds == set(CHECKS)


def test_stq_label_maps_of_bundled_vpq_set() -> None:
    check_label_maps(DATA / "vpq_a_small", DATA / "stq_a_small")


def test_unknown_set_layout_fails_clearly(tmp_path: Path) -> None:
    odd = tmp_path / "coco_thing"
    odd.mkdir()
    with pytest.raises(ValueError, match="unknown metrics golden set"):
        set_kind(odd)
    half = tmp_path / "vpq_half"
    (half / "gt").mkdir(parents=True)
    (half / "expected.json").write_text("{}")
    with pytest.raises(ValueError, match="missing"):
        set_kind(half)


def test_env_var_sets_are_collected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ytvis_x").mkdir()
    monkeypatch.setenv(ENV, str(tmp_path))
    assert golden_sets()[-1] == tmp_path / "ytvis_x"
    monkeypatch.setenv(ENV, str(tmp_path / "nothing"))
    sentinel = golden_sets()[-1]  # a path whose test fails (the other tests still run)
    assert not sentinel.exists() and "is not a folder" in sentinel.name
    with pytest.raises(AssertionError, match="not a metrics golden set"):
        test_metrics_golden(sentinel)


def test_a_wrong_number_fails(tmp_path: Path) -> None:
    """The comparison can fail: a golden set with one altered stat is rejected."""
    import shutil

    folder = tmp_path / "ytvis_altered"
    shutil.copytree(DATA / "ytvis_a_small", folder)
    expected = json.loads((folder / "expected.json").read_text())
    expected["stats"][0] += 1e-4
    (folder / "expected.json").write_text(json.dumps(expected))
    with pytest.raises(AssertionError, match="AP"):
        check_ytvis(folder)
