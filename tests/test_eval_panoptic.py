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
