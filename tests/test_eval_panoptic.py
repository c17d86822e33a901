"""VPQ / STQ / VSS on hand-built sets with known answers, written with our VIPSeg writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvis.errors import DataError
from dvis.evaluation import stq, vpq, vss
from dvis.evaluation.vipseg_io import open_set
from dvis.evaluation.writers import VIPSegWriter, ids_to_rgb

H, W = 8, 8
STUFF, THING = 1, 5
CATEGORIES = [{"id": STUFF, "name": "road", "isthing": 0}, {"id": THING, "name": "car", "isthing": 1},
              {"id": 7, "name": "sky", "isthing": 0}]


def ids_video(thing_ids: list[int], stuff_id: int = 100) -> np.ndarray:
    """(T, H, W): stuff everywhere, a 4x4 thing (id per frame; 0 = absent) in the corner."""
    video = np.full((len(thing_ids), H, W), stuff_id, dtype=np.int64)
    for t, tid in enumerate(thing_ids):
        if tid:
            video[t, :4, :4] = tid
    return video


def write_set(root: Path, gt_video: np.ndarray, pred_video: np.ndarray, gt_segments: dict, pred_segments: dict,
              crowd: tuple = ()) -> Path:
    """One video '001' as a VIPSeg set under root; *_segments: id -> category."""
    names = [f"{t:08d}.png" for t in range(len(gt_video))]
    gt_frames = []
    for t, ids in enumerate(gt_video):
        path = root / "gt" / "pano" / "001" / names[t]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids_to_rgb(ids)).save(path)
        present, counts = np.unique(ids, return_counts=True)
        gt_frames.append({"segments_info": [
            {"id": int(i), "category_id": gt_segments[int(i)], "iscrowd": int(int(i) in crowd), "area": int(c)}
            for i, c in zip(present, counts) if i != 0]})
    gt = {"videos": [{"video_id": "001", "images": [{"file_name": n} for n in names]}],
          "annotations": [{"video_id": "001", "annotations": gt_frames}], "categories": CATEGORIES}
    (root / "gt" / "gt.json").write_text(json.dumps(gt))
    writer = VIPSegWriter(root / "pred")
    writer.add_video("001", names, pred_video, [{"id": i, "category_id": c} for i, c in pred_segments.items()])
    writer.close()
    return root


def load(root: Path):
    return open_set(root / "gt" / "gt.json", root / "gt" / "pano", root / "pred")


# ----------------------------------------------------------------------------- VPQ


def test_vpq_perfect_is_100(tmp_path: Path) -> None:
    video = ids_video([200] * 8)  # 8 frames: every script window size has a window
    seg = {100: STUFF, 200: THING}
    result = vpq.evaluate_set(load(write_set(tmp_path, video, video, seg, seg)))
    assert result["VPQ"] == pytest.approx(100) and result["k_0_5_10_15"]["VPQ"] == pytest.approx(100)
    assert result["VPQ_thing"] == pytest.approx(100) and result["VPQ_stuff"] == pytest.approx(100)


def test_vpq_identity_switch_by_hand(tmp_path: Path) -> None:
    """Thing id 10 on frames 0-1 then 11 on frame 2 (same pixels).

    n=1: all match (PQ 1). n=2: window 0-1 TP IoU 1; window 1-2 IoU 16/32 = 0.5 is *not* > 0.5:
    1 FN + 2 FP -> PQ = 1 / (1 + 0.5*2 + 0.5*1) = 0.4. n=3: id 10 IoU 32/48 -> TP, id 11 FP:
    PQ = (2/3) / 1.5 = 4/9.
    """
    gt = ids_video([200, 200, 200])
    pred = ids_video([10, 10, 11])
    result = vpq.evaluate_set(load(write_set(tmp_path, gt, pred, {100: STUFF, 200: THING},
                                             {100: STUFF, 10: THING, 11: THING})), (1, 2, 3), (1, 2, 3))
    thing = {n: result["windows"][n]["Things"]["pq"] for n in (1, 2, 3)}
    assert thing == pytest.approx({1: 1.0, 2: 0.4, 3: 4 / 9})
    assert result["windows"][2]["per_class"][THING] == pytest.approx(
        {"pq": 0.4, "sq": 1.0, "rq": 0.4, "iou": 1.0, "tp": 1, "fp": 2, "fn": 1})
    assert result["VPQ"] == pytest.approx(100 * np.mean([1.0, 0.7, (1 + 4 / 9) / 2]))
    assert result["windows"][1]["per_class"][7]["tp"] == 0  # sky: no tp/fp/fn -> skipped
    assert result["windows"][1]["All"]["n"] == 2


def test_vpq_prediction_on_void_is_not_penalised(tmp_path: Path) -> None:
    gt = ids_video([200, 200])
    gt[:, 4:, :4] = 0  # void below the thing
    pred = ids_video([200, 200])
    pred[:, :, :4] = np.where(gt[:, :, :4] == 0, 200, pred[:, :, :4])  # thing spills onto void
    result = vpq.evaluate_set(load(write_set(tmp_path, gt, pred, {100: STUFF, 200: THING},
                                             {100: STUFF, 200: THING})), (1, 2), (1, 2))
    assert result["windows"][2]["per_class"][THING]["iou"] == pytest.approx(1.0)


def test_vpq_unmatched_prediction_on_crowd_is_not_a_false_positive(tmp_path: Path) -> None:
    gt = ids_video([300, 300])  # 300 = crowd car region
    pred = ids_video([200, 200])  # a car predicted where only crowd is annotated, slightly bigger
    pred[:, 4, :2] = 200
    result = vpq.evaluate_set(load(write_set(tmp_path, gt, pred, {100: STUFF, 300: THING},
                                             {100: STUFF, 200: THING}, crowd=(300,))), (1,), (1,))
    assert result["windows"][1]["per_class"][THING]["fp"] == 0
    assert result["windows"][1]["per_class"][THING]["fn"] == 0


# The four hand-built cases shared by VPQ and STQ: one 3-frame video, 8x8 px. Ground truth:
# stuff id 100 (48 px per frame) around a thing id 200 (16 px, rows/cols 0-3) on every frame.
#   perfect   the prediction is the ground truth;
#   empty     every predicted pixel is void (0) and pred.json lists no segment;
#   disjoint  the thing is predicted in the opposite corner (rows/cols 4-7), stuff elsewhere:
#             thing IoU 0; stuff overlaps on 64 - 16 - 16 = 32 px of a 64 px union: IoU exactly 0.5;
#   missing   frames 0-1 are the ground truth, frame 2 is all void (the frame was not predicted).
SCENARIO_FRAMES = 3


def scenario(kind: str) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    gt = ids_video([200] * SCENARIO_FRAMES)
    seg = {100: STUFF, 200: THING}
    if kind == "perfect":
        return gt, gt.copy(), seg, seg
    if kind == "empty":
        return gt, np.zeros_like(gt), seg, {}
    pred = gt.copy()
    if kind == "disjoint":
        pred[:] = 100
        pred[:, 4:, 4:] = 200
    elif kind == "missing":
        pred[-1] = 0
    return gt, pred, seg, seg


def run_vpq(tmp_path: Path, kind: str) -> dict:
    gt, pred, gt_seg, pred_seg = scenario(kind)
    return vpq.evaluate_set(load(write_set(tmp_path, gt, pred, gt_seg, pred_seg)), (1, 2, 3), (1, 2, 3))


# VPQ per window size n (windows of n consecutive frames, stride 1: 3, 2 and 1 windows):
#   perfect   every tube matches with IoU 1: PQ 1 for stuff and thing at every n;
#   empty     no predicted tube: each window has 1 FN per category, PQ = 0 / (0.5 FN) = 0;
#   disjoint  thing IoU 0 and stuff IoU 0.5 (not > 0.5): 1 FP + 1 FN per category and window,
#             PQ 0; over n = 1: 3 FP and 3 FN per category;
#   missing   n=1: frames 0, 1 TP (IoU 1), frame 2 FN: PQ = 2 / (2 + 0.5) = 0.8;
#             n=2: window 0-1 TP; window 1-2 stuff 48 / (48 + 96 - 48) = 0.5 and thing 16 / 32 = 0.5,
#             not > 0.5: 1 FP + 1 FN: PQ = 1 / (1 + 0.5 + 0.5) = 0.5;
#             n=3: stuff 96 / 144, thing 32 / 48: one TP with IoU 2/3: PQ 2/3;
#             VPQ = 100 (0.8 + 0.5 + 2/3) / 3, the same for thing and stuff.
VPQ_PER_WINDOW = {"perfect": {1: 1.0, 2: 1.0, 3: 1.0}, "empty": {1: 0.0, 2: 0.0, 3: 0.0},
                  "disjoint": {1: 0.0, 2: 0.0, 3: 0.0}, "missing": {1: 0.8, 2: 0.5, 3: 2 / 3}}


@pytest.mark.parametrize("kind", list(VPQ_PER_WINDOW))
def test_vpq_hand_built_cases(tmp_path: Path, kind: str) -> None:
    result = run_vpq(tmp_path, kind)
    expected = VPQ_PER_WINDOW[kind]
    for n, pq in expected.items():
        for part in ("All", "Things", "Stuff"):
            assert result["windows"][n][part]["pq"] == pytest.approx(pq, abs=1e-12), (n, part)
        assert result["windows"][n]["All"]["n"] == 2  # sky has no tp/fp/fn: skipped
    vpq_value = 100 * sum(expected.values()) / 3
    for key in ("VPQ", "VPQ_thing", "VPQ_stuff"):
        assert result[key] == pytest.approx(vpq_value, abs=1e-9)


def test_vpq_hand_built_counts(tmp_path: Path) -> None:
    """The TP/FP/FN behind the PQ values above."""
    empty = run_vpq(tmp_path / "empty", "empty")["windows"][1]["per_class"]
    assert (empty[THING]["tp"], empty[THING]["fp"], empty[THING]["fn"]) == (0, 0, 3)
    disjoint = run_vpq(tmp_path / "disjoint", "disjoint")["windows"][1]["per_class"]
    for cat in (STUFF, THING):
        assert (disjoint[cat]["tp"], disjoint[cat]["fp"], disjoint[cat]["fn"]) == (0, 3, 3)
    missing = run_vpq(tmp_path / "missing", "missing")["windows"]
    assert missing[2]["per_class"][STUFF] == pytest.approx(
        {"pq": 0.5, "sq": 1.0, "rq": 0.5, "iou": 1.0, "tp": 1, "fp": 1, "fn": 1})
    assert missing[3]["per_class"][THING]["iou"] == pytest.approx(2 / 3)


def test_vpq_bad_prediction_files(tmp_path: Path) -> None:
    video = ids_video([200, 200])
    root = write_set(tmp_path, video, video, {100: STUFF, 200: THING}, {100: STUFF, 200: THING})
    pred = json.loads((root / "pred" / "pred.json").read_text())
    pred["annotations"][0]["annotations"][1]["segments_info"] = pred["annotations"][0]["annotations"][1][
        "segments_info"][:1]
    (root / "pred" / "pred.json").write_text(json.dumps(pred))
    with pytest.raises(DataError, match="in the PNG but not in 'segments_info'"):
        vpq.evaluate_set(load(root))
    (root / "pred" / "pan_pred" / "001" / "00000000.png").unlink()
    with pytest.raises(DataError, match="00000000.png"):
        vpq.evaluate_set(load(root))


# ----------------------------------------------------------------------------- STQ


def test_stq_perfect_is_one(tmp_path: Path) -> None:
    video = ids_video([200, 200, 0])
    seg = {100: STUFF, 200: THING}
    result = stq.evaluate_set(load(write_set(tmp_path, video, video, seg, seg)))
    assert result["STQ"] == pytest.approx(1.0) and result["AQ"] == pytest.approx(1.0)
    assert result["SQ"] == pytest.approx(1.0)


def test_stq_identity_switch_by_hand(tmp_path: Path) -> None:
    """One 48-px tube split 32/16 between two predicted ids: AQ = (32*32/48 + 16*16/48)/48 = 5/9."""
    gt = ids_video([200, 200, 200])
    pred = ids_video([10, 10, 11])
    result = stq.evaluate_set(load(write_set(tmp_path, gt, pred, {100: STUFF, 200: THING},
                                             {100: STUFF, 10: THING, 11: THING})))
    assert result["AQ"] == pytest.approx(5 / 9)
    assert result["SQ"] == pytest.approx(1.0)
    assert result["STQ"] == pytest.approx(np.sqrt(5 / 9))


# STQ (124 classes, unlabelled -> class 124) on the same four cases. Instance numbers follow first
# appearance: ground-truth stuff 100 is instance 0, thing 200 instance 1 (so not the crowd quirk).
#   perfect   AQ 1, SQ 1, STQ 1;
#   empty     all pixels predicted unlabelled: no predicted thing, AQ 0; stuff and thing IoU 0 and
#             the unlabelled class 124 IoU 0: SQ 0; STQ 0;
#   disjoint  the thing tubes never overlap: AQ 0; stuff IoU 32 / (32 + 16 FP + 16 FN) = 0.5,
#             thing IoU 0: SQ 0.25; STQ sqrt(0 * 0.25) = 0;
#   missing   ground-truth tube 48 px, predicted tube 32 px, all inside it:
#             AQ = (1/48) * 32 * 32 / (32 + 48 - 32) = 4/9; stuff IoU 96 / 144, thing 32 / 48, class
#             124 (64 px predicted unlabelled, none in the ground truth) IoU 0 but counted:
#             SQ = (2/3 + 2/3 + 0) / 3 = 4/9; STQ = sqrt(4/9 * 4/9) = 4/9.
STQ_EXPECTED = {"perfect": (1.0, 1.0, 1.0), "empty": (0.0, 0.0, 0.0), "disjoint": (0.0, 0.25, 0.0),
                "missing": (4 / 9, 4 / 9, 4 / 9)}


@pytest.mark.parametrize("kind", list(STQ_EXPECTED))
def test_stq_hand_built_cases(tmp_path: Path, kind: str) -> None:
    gt, pred, gt_seg, pred_seg = scenario(kind)
    result = stq.evaluate_set(load(write_set(tmp_path, gt, pred, gt_seg, pred_seg)))
    aq, sq, stq_value = STQ_EXPECTED[kind]
    assert result["AQ"] == pytest.approx(aq, abs=1e-12)
    assert result["SQ"] == pytest.approx(sq, abs=1e-12)
    assert result["STQ"] == pytest.approx(stq_value, abs=1e-12)
    if kind in ("empty", "missing"):
        assert 124 in result["per_class_iou"] and result["per_class_iou"][124]["iou"] == 0.0


def test_stq_first_thing_instance_is_crowd_and_unlabelled_prediction_is_a_class() -> None:
    metric = stq.STQuality(10, [5], 255, 16, 2 ** 24)
    gt = np.full((4, 4), (1 << 16) + 1, dtype=np.int64)  # stuff class 1, instance 1
    gt[:2, :2] = 5 << 16  # thing class 5 instance 0 -> crowd (quirk): no tube
    pred = gt.copy()
    pred[3, 3] = (255 << 16) + 255  # one pixel predicted as unlabelled -> class 10 with IoU 0
    metric.update(gt, pred)
    result = metric.result()
    assert result["AQ"] == 0.0  # no thing tube at all
    iou_stuff = 11 / 12
    assert result["SQ"] == pytest.approx((iou_stuff + 1.0 + 0.0) / 3)
    assert result["per_class_iou"][10] == {"iou": 0.0, "tp": 0, "fp": 1, "fn": 0}


# ----------------------------------------------------------------------------- VSS


def test_vss_perfect_and_quirky_window_counts() -> None:
    gt = np.full((10, 4, 4), 3, dtype=np.uint8)
    perfect = evaluate_vss(gt, gt - 1)
    assert perfect["mIoU"] == 1.0 and perfect["mVC8"] == 1.0
    pred = gt.copy() - 1
    pred[8, :1, :] = 0  # 4 of 16 pixels change on frame 8
    pred[9] = 0  # frame 9 is in no window: the script's range(T - n) skips the last one
    result = evaluate_vss(gt, pred)
    assert result["mVC8"] == pytest.approx((1.0 + 12 / 16) / 2)
    assert result["mVC16_own_windows"] is None  # 10 frames <= 16: video skipped
    assert result["mVC16"] == pytest.approx(result["mVC8"])  # the script's list carries VC8 windows


def evaluate_vss(gt: np.ndarray, pred: np.ndarray) -> dict:
    return vss.evaluate_arrays([(gt, pred)], num_classes=4)


def test_vss_miou_by_hand() -> None:
    gt = np.array([[[1, 1, 2, 0]]], dtype=np.uint8)  # classes 0, 0, 1, void
    pred = np.array([[[0, 1, 1, 3]]], dtype=np.uint8)
    # class 0: tp 1, fn 1 -> 1/2; class 1: tp 1, fp 1 -> 1/2; void pixel ignored; class 2,3 no GT
    assert vss.evaluate_arrays([(gt, pred)], num_classes=4)["mIoU"] == pytest.approx(0.5)
    with pytest.raises(DataError, match="predicted class 9"):
        vss.evaluate_arrays([(gt, np.array([[[9, 1, 1, 3]]], dtype=np.uint8))], num_classes=4)


def test_vss_folders(tmp_path: Path) -> None:
    (tmp_path / "val.txt").write_text("vid\n")
    for t in range(3):
        for root in (tmp_path / "data" / "vid" / "mask", tmp_path / "pred" / "vid"):
            root.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), 2, np.uint8)).save(tmp_path / "data" / "vid" / "mask" / f"{t:05d}.png")
        Image.fromarray(np.full((4, 4), 1, np.uint8)).save(tmp_path / "pred" / "vid" / f"{t:05d}.png")
    result = vss.evaluate_folders(tmp_path, tmp_path / "pred", num_classes=4)
    assert result["mIoU"] == 1.0 and result["videos"] == 1
    with pytest.raises(DataError, match="split file"):
        vss.evaluate_folders(tmp_path, tmp_path / "pred", split="test.txt")


# VSS hand-built cases: 18 frames of 4x4. Ground-truth PNG value 3 (class 2) everywhere except a
# 2x2 object of value 2 (class 1) in the corner, the same on every frame. Predictions are class maps:
#   perfect   gt - 1: mIoU 1, every window consistent: mVC8 = mVC16 = 1;
#   empty     every pixel class 0, which the ground truth never has: class 1 and 2 IoU 0 (class 0 has
#             no ground truth, so it is not in the mean): mIoU 0; the prediction never changes, so
#             every window is consistent: mVC8 = mVC16 = 1 (VC measures stability, not accuracy);
#   disjoint  the two classes swapped (object -> 2, rest -> 1): mIoU 0, mVC 1;
#   missing   gt - 1 except frame 0, predicted as empty (class 0). mIoU: class 1 68 / 72, class 2
#             204 / 216, both 17/18. VC8 windows start at 0..9 (range(T - n)): only window 0
#             holds frame 0, where every pixel changes: VC 0; the other 9 give 1: mVC8 = 9/10.
#             VC16 windows start at 0, 1: 0 and 1, own mean 1/2; the script's mVC16 pools them
#             with the 10 VC8 windows: (9 + 1) / 12 = 5/6.
VSS_FRAMES = 18


def vss_scenario(kind: str) -> tuple[np.ndarray, np.ndarray]:
    gt = np.full((VSS_FRAMES, 4, 4), 3, dtype=np.uint8)
    gt[:, :2, :2] = 2
    pred = gt - 1
    if kind == "empty":
        pred[:] = 0
    elif kind == "disjoint":
        pred = np.where(gt == 2, 2, 1).astype(np.uint8)
    elif kind == "missing":
        pred[0] = 0
    return gt, pred


VSS_EXPECTED = {  # mIoU, mVC8, mVC16 (script), mVC16 (own windows)
    "perfect": (1.0, 1.0, 1.0, 1.0), "empty": (0.0, 1.0, 1.0, 1.0), "disjoint": (0.0, 1.0, 1.0, 1.0),
    "missing": (17 / 18, 0.9, 5 / 6, 0.5)}


@pytest.mark.parametrize("kind", list(VSS_EXPECTED))
def test_vss_hand_built_cases(kind: str) -> None:
    result = vss.evaluate_arrays([vss_scenario(kind)], num_classes=4)
    got = (result["mIoU"], result["mVC8"], result["mVC16"], result["mVC16_own_windows"])
    assert got == pytest.approx(VSS_EXPECTED[kind], abs=1e-12)
