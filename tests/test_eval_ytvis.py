"""YouTube-VIS / OVIS AP: hand-built cases with known answers, quirks, occlusion split, bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from dvis.errors import DataError
from dvis.evaluation.occlusion import level_from_ratio, occlusion_level
from dvis.evaluation.rle import encode_masks
from dvis.evaluation.ytvis import RANGES, _tube_iou_matrix, evaluate_tracks, match_video_category
from dvis.evaluation.ytvis_data import FrameCountWarning, load_results, parse_ground_truth, parse_results

H, W, T = 16, 16, 4


def box(y: int, x: int, size: int = 4, frames=range(T), length: int = T) -> np.ndarray:
    """(T, H, W) masks: a size x size square at (y, x) on the given frames."""
    masks = np.zeros((length, H, W), dtype=bool)
    for f in frames:
        masks[f, y:y + size, x:x + size] = True
    return masks


def gt_dict(objects: list[dict], num_videos: int = 1, categories=(1, 2)) -> dict:
    """objects: {video_id, category_id, masks (T,H,W)[, iscrowd, id, occlusion_level, occlusion]}."""
    anns = []
    for i, obj in enumerate(objects):
        masks = obj["masks"]
        rles = encode_masks(masks)
        ann = {"id": obj.get("id", i + 1), "video_id": obj.get("video_id", 1), "category_id": obj["category_id"],
               "segmentations": [r if m.any() else None for r, m in zip(rles, masks)],
               "areas": [int(m.sum()) or None for m in masks], "iscrowd": obj.get("iscrowd", 0)}
        for key in ("occlusion_level", "occlusion"):
            if key in obj:
                ann[key] = obj[key]
        anns.append(ann)
    videos = [{"id": v, "height": H, "width": W, "length": T,
               "file_names": [f"v{v}/{t:05d}.jpg" for t in range(T)]} for v in range(1, num_videos + 1)]
    return {"videos": videos, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in categories]}


def det(masks: np.ndarray, score: float, category_id: int = 1, video_id: int = 1, null_empty: bool = True) -> dict:
    rles = encode_masks(masks)
    segs = [r if (m.any() or not null_empty) else None for r, m in zip(rles, masks)]
    return {"video_id": video_id, "category_id": category_id, "score": score, "segmentations": segs}


def evaluate(gt: dict, results: list[dict]) -> dict:
    truth = parse_ground_truth(gt, "gt.json")
    return evaluate_tracks(truth, parse_results(results, truth, "results.json"))


def truncated(entry: dict, frames: int) -> dict:
    """The entry with its frame list cut to (or padded with masks of frame 0 up to) ``frames``."""
    segs = entry["segmentations"]
    return {**entry, "segmentations": (segs + [segs[0]] * frames)[:frames]}


# ----------------------------------------------------------------------------- known answers


def test_perfect_prediction_scores_one() -> None:
    a, b = box(0, 0), box(8, 8)
    result = evaluate(gt_dict([{"category_id": 1, "masks": a}, {"category_id": 2, "masks": b}]),
                      [det(a, 0.9, 1), det(b, 0.8, 2)])
    for key in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100", "ARs"):
        assert result[key] == pytest.approx(1.0, abs=1e-12), key
    assert result["APm"] == -1 and result["APl"] == -1  # no medium/large objects
    assert result["per_category"] == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}


def test_empty_predictions_score_zero() -> None:
    result = evaluate(gt_dict([{"category_id": 1, "masks": box(0, 0)}]), [])
    assert result["AP"] == 0.0 and result["AR100"] == 0.0
    assert result["per_category"] == {1: 0.0, 2: None}  # category 2 has no ground truth


def test_disjoint_prediction_scores_zero() -> None:
    result = evaluate(gt_dict([{"category_id": 1, "masks": box(0, 0)}]), [det(box(8, 8), 0.9)])
    assert result["AP"] == 0.0 and result["AR100"] == 0.0


def test_one_missing_frame_gives_iou_three_quarters() -> None:
    """GT 16 px on 4 frames; prediction identical but null on frame 2: IoU = 48 / 64."""
    gt = gt_dict([{"category_id": 1, "masks": box(2, 2)}])
    pred = box(2, 2, frames=(0, 1, 3))
    truth = parse_ground_truth(gt)
    dets = parse_results([det(pred, 0.9)], truth)
    assert _tube_iou_matrix(dets, truth.tracks)[0, 0] == 0.75
    result = evaluate_tracks(truth, dets)
    assert result["AP50"] == pytest.approx(1.0) and result["AP75"] == pytest.approx(1.0)
    assert result["AP"] == pytest.approx(0.6)  # thresholds .50-.75 of 10 match


def test_frame_with_only_a_prediction_adds_to_union_only() -> None:
    gt = gt_dict([{"category_id": 1, "masks": box(2, 2, frames=(0, 1, 2))}])
    truth = parse_ground_truth(gt)
    # prediction covers the 3 GT frames exactly plus frame 3 (an empty RLE instead of null: same)
    dets = parse_results([det(box(2, 2), 0.9), det(box(2, 2, frames=(0, 1, 2)), 0.5, null_empty=False)], truth)
    ious = _tube_iou_matrix(dets, truth.tracks)
    assert ious[0, 0] == 48 / 64 and ious[1, 0] == 1.0


def test_iou_matrix_partial_overlap() -> None:
    truth = parse_ground_truth(gt_dict([{"category_id": 1, "masks": box(0, 0)}]))
    dets = parse_results([det(box(0, 2), 0.9)], truth)  # 8 of 16 px overlap per frame
    assert _tube_iou_matrix(dets, truth.tracks)[0, 0] == pytest.approx(32 / 96)


def test_crowd_ground_truth_absorbs_several_detections() -> None:
    crowd = np.zeros((T, H, W), dtype=bool)
    crowd[:, 8:16, 8:16] = True
    gt = gt_dict([{"category_id": 1, "masks": box(0, 0)}, {"category_id": 1, "masks": crowd, "iscrowd": 1}])
    # two high-scoring detections on the crowd region, then the true positive
    result = evaluate(gt, [det(crowd, 0.95), det(crowd, 0.94), det(box(0, 0), 0.9)])
    assert result["AP"] == pytest.approx(1.0)
    assert result["AR100"] == pytest.approx(1.0)  # the crowd object is not counted in recall


def test_crowd_uses_tube_iou_not_intersection_over_detection() -> None:
    """A small detection inside a crowd region has IoU 1/4 with it: a false positive here."""
    crowd = np.zeros((T, H, W), dtype=bool)
    crowd[:, 8:16, 8:16] = True
    gt = gt_dict([{"category_id": 1, "masks": box(0, 0)}, {"category_id": 1, "masks": crowd, "iscrowd": 1}])
    result = evaluate(gt, [det(box(8, 8), 0.95), det(box(0, 0), 0.9)])
    assert result["AP"] == pytest.approx(0.5, abs=1e-12)


def test_equal_ious_go_to_the_later_ground_truth() -> None:
    a = box(4, 4)
    truth = parse_ground_truth(gt_dict([{"category_id": 1, "masks": a, "id": 7}, {"category_id": 1, "masks": a, "id": 9}]))
    dets = parse_results([det(a, 0.9)], truth)
    ious = _tube_iou_matrix(dets, truth.tracks)
    match = match_video_category(ious, dets, truth.tracks, RANGES[0])
    assert set(match.matched_gt[:, 0]) == {9}


def test_detection_ranked_past_ten_counts_for_ar100_only() -> None:
    gt = gt_dict([{"category_id": 1, "masks": box(0, 0)}])
    junk = [det(box(12, 12), 0.9 - 0.01 * i) for i in range(11)]
    result = evaluate(gt, junk + [det(box(0, 0), 0.1)])
    assert result["AR10"] == 0.0 and result["AR1"] == 0.0
    assert result["AR100"] == pytest.approx(1.0)


def test_predictions_of_categories_absent_from_gt_are_dropped() -> None:
    gt = gt_dict([{"category_id": 1, "masks": box(0, 0)}], categories=(1,))
    base = evaluate(gt, [det(box(0, 0), 0.5)])
    extra = evaluate(gt, [det(box(0, 0), 0.5), det(box(8, 8), 0.99, category_id=42)])
    assert base["stats"] == extra["stats"] and base["AP"] == pytest.approx(1.0)


def test_ground_truth_id_zero_counts_as_unmatched() -> None:
    """Public-code quirk: the matched gt id doubles as the match flag, so gt id 0 never matches."""
    result = evaluate(gt_dict([{"category_id": 1, "masks": box(0, 0), "id": 0}]), [det(box(0, 0), 0.9)])
    assert result["AP"] == 0.0


def test_area_range_uses_gt_areas_field() -> None:
    gt = gt_dict([{"category_id": 1, "masks": box(0, 0)}])
    gt["annotations"][0]["areas"] = [20000, None, 0, 20000]  # claims "medium" (null / 0 skipped)
    result = evaluate(gt, [det(box(0, 0), 0.9)])
    assert result["APm"] == pytest.approx(1.0) and result["APs"] == -1


# ----------------------------------------------------------------------------- frame lists of other lengths


def test_short_result_pairs_frames_up_to_the_shorter_list() -> None:
    """GT: 16 px on 4 frames. A result listing only frames 0-2 (exact): the public ``zip`` stops
    after 3 frames, so frame 3 adds nothing: IoU = 48 / 48 = 1 and AP = 1 (a result that is
    null on frame 3 instead has IoU 48 / 64 = 0.75 and AP 0.6, see above)."""
    truth = parse_ground_truth(gt_dict([{"category_id": 1, "masks": box(2, 2)}]), "gt.json")
    with pytest.warns(FrameCountWarning, match=r"results\.json: 1 result has .*entry 0 has 3 frames, video 1 has 4"):
        dets = parse_results([truncated(det(box(2, 2), 0.9), 3)], truth, "results.json")
    assert len(dets[0].rles) == 3
    assert _tube_iou_matrix(dets, truth.tracks)[0, 0] == 1.0
    result = evaluate_tracks(truth, dets)
    assert result["AP"] == pytest.approx(1.0) and result["AR100"] == pytest.approx(1.0)


def test_pairing_is_per_pair_not_per_video() -> None:
    """In one video, a full-length result null on frame 3 keeps IoU 48 / 64 = 0.75 although a
    3-frame result of the same video exists (its own pair: 48 / 48 = 1); a 3-frame ground truth
    against a full-length result covering frame 3 too: frame 3 is past the pair, IoU 1."""
    gt = gt_dict([{"category_id": 1, "masks": box(2, 2)}, {"category_id": 2, "masks": box(8, 8)}])
    gt["annotations"][1]["segmentations"] = gt["annotations"][1]["segmentations"][:3]
    with pytest.warns(FrameCountWarning, match=r"annotations\[1\] \(id 2\) has 3 frames, video 1 has 4"):
        truth = parse_ground_truth(gt, "gt.json")
    results = [det(box(2, 2, frames=(0, 1, 2)), 0.9), truncated(det(box(2, 2), 0.8), 3), det(box(8, 8), 0.7, 2)]
    with pytest.warns(FrameCountWarning, match=r"entry 1 has 3 frames"):
        dets = parse_results(results, truth, "results.json")
    ious = _tube_iou_matrix(dets, truth.tracks)
    assert ious[0, 0] == 0.75 and ious[1, 0] == 1.0 and ious[2, 1] == 1.0
    assert ious[1, 1] == 0.0 and ious[2, 0] == 0.0


def test_long_result_ignores_extra_frames_in_iou_but_not_in_area() -> None:
    """A result with a 5th frame (64 px) on a 4-frame video: the IoU stops at frame 3 (IoU 1);
    its area, as in the public ``loadRes``, is the mean over all its frames: (4 * 16 + 64) / 5."""
    truth = parse_ground_truth(gt_dict([{"category_id": 1, "masks": box(2, 2)}]), "gt.json")
    entry = det(box(2, 2), 0.9)
    entry["segmentations"].append(encode_masks(box(0, 0, size=8, frames=(0,), length=1))[0])
    with pytest.warns(FrameCountWarning, match=r"entry 0 has 5 frames, video 1 has 4"):
        dets = parse_results([entry], truth, "results.json")
    assert _tube_iou_matrix(dets, truth.tracks)[0, 0] == 1.0
    assert dets[0].avg_area == pytest.approx((4 * 16 + 64) / 5)
    assert evaluate_tracks(truth, dets)["AP"] == pytest.approx(1.0)


def test_warning_lists_five_entries_then_counts_the_rest() -> None:
    truth = parse_ground_truth(gt_dict([{"category_id": 1, "masks": box(2, 2)}]), "gt.json")
    results = [truncated(det(box(2, 2), 0.9 - i / 100), 2) for i in range(7)]
    with pytest.warns(FrameCountWarning) as record:
        parse_results(results, truth, "results.json")
    assert len(record) == 1
    message = str(record[0].message)
    assert "7 results have" in message and "entry 4 has 2 frames" in message and "entry 5" not in message
    assert "and 2 more" in message


def test_equal_lengths_give_no_warning() -> None:
    truth = parse_ground_truth(gt_dict([{"category_id": 1, "masks": box(2, 2)}]), "gt.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FrameCountWarning)
        parse_results([det(box(2, 2), 0.9)], truth, "results.json")


@pytest.mark.parametrize("frames", [3, 5])
def test_strict_lengths_refuses_other_lengths_naming_file_entry_and_lengths(tmp_path: Path, frames: int) -> None:
    truth = parse_ground_truth(gt_dict([{"category_id": 1, "masks": box(0, 0)}]))
    path = write_results(tmp_path, [det(box(0, 0), 0.9), truncated(det(box(0, 0), 0.8), frames)])
    with pytest.raises(DataError) as err:
        load_results(path, truth, strict_lengths=True)
    message = str(err.value)
    assert str(path) in message and "entry 1" in message and "'segmentations'" in message
    assert f"has {frames} frames but video 1 has 4" in message
    gt = gt_dict([{"category_id": 1, "masks": box(0, 0)}])
    gt["annotations"][0]["segmentations"].pop()
    with pytest.raises(DataError, match=r"gt\.json: annotations\[0\]: field 'segmentations' has 3 frames"):
        parse_ground_truth(gt, "gt.json", strict_lengths=True)


# ----------------------------------------------------------------------------- occlusion split


def occlusion_case() -> tuple[dict, list]:
    light, heavy = box(0, 0), box(8, 8)
    gt = gt_dict([{"category_id": 1, "masks": light, "occlusion": 0.1},
                  {"category_id": 1, "masks": heavy, "occlusion_level": "heavy"}])
    unmatched = det(box(0, 10), 0.99)  # hits nothing
    on_heavy = det(heavy, 0.97)
    on_light = det(light, 0.90)
    return gt, [unmatched, on_heavy, on_light]


def test_occlusion_split_ignores_other_levels_and_counts_unmatched_everywhere() -> None:
    gt, results = occlusion_case()
    result = evaluate(gt, results)
    # light: unmatched FP, heavy-matched detection ignored, then TP -> precision 1/2 at recall 1
    assert result["AP_light"] == pytest.approx(0.5, abs=1e-12)
    # heavy: unmatched FP, then TP; the light-matched detection is ignored
    assert result["AP_heavy"] == pytest.approx(0.5, abs=1e-12)
    assert result["AP_medium"] is None  # no medium objects
    # the ordinary AP sees FP, TP, TP: interpolated precision is 2/3 at every recall
    assert result["AP"] == pytest.approx(2 / 3, abs=1e-12)


def test_occlusion_split_is_null_without_levels() -> None:
    result = evaluate(gt_dict([{"category_id": 1, "masks": box(0, 0)}]), [det(box(0, 0), 0.9)])
    assert result["AP_light"] is None and result["AP_medium"] is None and result["AP_heavy"] is None


def test_occlusion_level_bands() -> None:
    assert [level_from_ratio(r) for r in (0.0, 0.2499, 0.25, 0.5, 0.5001, 1.0)] == \
        ["light", "light", "medium", "medium", "heavy", "heavy"]
    assert occlusion_level({"occlusion": [0.1, None, 0.7]}, "x") == "medium"  # mean 0.4
    assert occlusion_level({"occlusion_level": "light", "occlusion": 0.9}, "x") == "light"
    assert occlusion_level({}, "x") is None
    with pytest.raises(DataError, match="occlusion_level"):
        occlusion_level({"occlusion_level": "partial"}, "gt.json: annotations[3]")
    with pytest.raises(DataError, match="occlusion"):
        occlusion_level({"occlusion": 1.5}, "gt.json: annotations[3]")


# ----------------------------------------------------------------------------- bad input


def write_results(tmp_path: Path, entries) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(entries))
    return path


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e.pop("video_id"), "video_id"),
    (lambda e: e.update(video_id=99), "video_id"),
    (lambda e: e.pop("score"), "score"),
    (lambda e: e.update(score="high"), "score"),
    (lambda e: e.update(segmentations={"a": 1}), "segmentations"),
])
def test_malformed_results_name_file_entry_and_field(tmp_path: Path, mutate, field: str) -> None:
    truth = parse_ground_truth(gt_dict([{"category_id": 1, "masks": box(0, 0)}]))
    entries = [det(box(0, 0), 0.9), det(box(0, 0), 0.8)]
    mutate(entries[1])
    path = write_results(tmp_path, entries)
    with pytest.raises(DataError) as err:
        load_results(path, truth)
    message = str(err.value)
    assert str(path) in message and "entry 1" in message and field in message


def test_wrong_mask_size_and_bad_json(tmp_path: Path) -> None:
    truth = parse_ground_truth(gt_dict([{"category_id": 1, "masks": box(0, 0)}]))
    entry = det(box(0, 0), 0.9)
    entry["segmentations"][0] = {"size": [8, 8], "counts": entry["segmentations"][0]["counts"]}
    with pytest.raises(DataError, match=r"entry 0.*segmentations\[0\].*size"):
        load_results(write_results(tmp_path, [entry]), truth)
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(DataError, match="not valid JSON"):
        load_results(bad, truth)
    with pytest.raises(DataError, match="JSON list"):
        load_results(write_results(tmp_path, {"video_id": 1}), truth)


def test_malformed_ground_truth_names_the_field() -> None:
    gt = gt_dict([{"category_id": 1, "masks": box(0, 0)}])
    del gt["annotations"][0]["areas"]
    with pytest.raises(DataError, match=r"annotations\[0\].*'areas'"):
        parse_ground_truth(gt, "gt.json")


# ----------------------------------------------------------------------------- long videos (issue 14.1)


def long_tracks(frames: int) -> list[np.ndarray]:
    """Two moving squares on ``frames`` 16x16 frames, (frames, H, W) bool each."""
    tracks = [np.zeros((frames, H, W), dtype=bool) for _ in range(2)]
    for t in range(frames):
        tracks[0][t, t % 8:t % 8 + 4, 0:4] = True
        tracks[1][t, 8:12, t % 8:t % 8 + 6] = True
    return tracks


def test_ground_truth_of_300_frame_tracks_as_predictions_scores_one(tmp_path: Path) -> None:
    """pycocotools' mask.area builds a uint8 array of the count: >= 256 masks overflowed (numpy 2)."""
    from dvis.evaluation.ytvis import evaluate_files

    frames = 300
    gt = gt_dict([{"category_id": 1, "masks": m} for m in long_tracks(frames)])
    gt["videos"] = [{"id": 1, "height": H, "width": W, "length": frames}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": a["segmentations"]}
               for a in gt["annotations"]]
    (tmp_path / "res.json").write_text(json.dumps(results))
    result = evaluate_files(tmp_path / "gt.json", tmp_path / "res.json")
    assert result["AP"] == pytest.approx(1.0, abs=1e-12) and result["AR100"] == pytest.approx(1.0, abs=1e-12)


def test_a_video_with_300_objects_of_one_category_is_evaluated() -> None:
    """300 ground-truth masks of one video and category go through pycocotools' area in one call
    (detections are cut to the 100 best first; 299 of the objects are crowd, so AP stays 1)."""
    truth = box(0, 0)
    crowd = [{"category_id": 1, "masks": box(8 + (i % 2) * 4, 8, size=2), "iscrowd": 1} for i in range(299)]
    result = evaluate(gt_dict([{"category_id": 1, "masks": truth}, *crowd]), [det(truth, 0.9)])
    assert result["AP"] == pytest.approx(1.0, abs=1e-12)


def test_areas_of_more_than_255_masks_are_exact() -> None:
    from dvis.evaluation.rle import areas

    masks = np.zeros((600, 4, 5), dtype=bool)
    for t in range(600):
        masks.reshape(600, -1)[t, :t % 21] = True
    np.testing.assert_array_equal(areas(encode_masks(masks)), [t % 21 for t in range(600)])


def test_every_pycocotools_call_of_the_package_takes_300_masks() -> None:
    """The other wrappers of pycocotools (encode, decode, IoU, polygons, uncompressed RLE) with 300."""
    from dvis.data import masks as data_masks
    from dvis.evaluation.rle import areas, intersections, to_rle

    masks = np.stack(long_tracks(300)[0])
    rles = encode_masks(masks)
    as_bytes = [{"size": r["size"], "counts": r["counts"].encode()} for r in rles]
    sums = masks.reshape(300, -1).sum(1).astype(float)
    np.testing.assert_array_equal(np.diag(intersections(as_bytes, as_bytes, sums, sums)), sums)
    polygon = [[0, 0, 4, 0, 4, 4, 0, 4]] * 300
    assert areas([to_rle(polygon, H, W, "p")])[0] == data_masks.decode(polygon, H, W).sum() > 0
    uncompressed = {"size": [H, W], "counts": [0] + [1] * 255 + [1]}
    assert data_masks.decode(uncompressed, H, W).sum() == 128
    assert all(np.array_equal(data_masks.decode(r, H, W), m) for r, m in zip(rles, masks))
