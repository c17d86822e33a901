"""Result writers (round trip, atomic writes) and the dvis eval* commands."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_api

from dvis.cli import main
from dvis.evaluation import writers
from dvis.evaluation.ytvis_data import load_results, parse_ground_truth
from test_eval_ytvis import box, gt_dict

DATA = Path(__file__).parent / "data" / "metrics_example"


def test_ytvis_results_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((3, 4, 16, 16)) > 0.6  # (N, T, H, W)
    masks[1, 2] = False  # an empty frame stays an (empty) RLE
    entries = writers.ytvis_entries(1, np.array([0.9, 0.5, 0.1]), np.array([1, 2, 1]), masks)
    path = writers.write_ytvis_results(tmp_path / "results.json", entries)
    truth = parse_ground_truth(gt_dict([{"category_id": 1, "masks": box(0, 0)}]))
    dets = load_results(path, truth)
    assert [d.score for d in dets] == [0.9, 0.5, 0.1] and [d.category_id for d in dets] == [1, 2, 1]
    for det, expected in zip(dets, masks):
        decoded = np.stack([mask_api.decode(r) for r in det.rles]).astype(bool)
        np.testing.assert_array_equal(decoded, expected)
    archive = writers.zip_results(path, tmp_path / "submission.zip")
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist() == ["results.json"]
        assert json.loads(zf.read("results.json")) == json.loads(path.read_text())


def test_atomic_write_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        writers.write_ytvis_results(target, [])
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_vipseg_writer_layout(tmp_path: Path) -> None:
    ids = np.zeros((2, 4, 4), dtype=np.int64)
    ids[:, :2] = 70000  # needs all three colour channels
    ids[1, 3, 3] = 5
    writer = writers.VIPSegWriter(tmp_path)
    writer.add_video("v1", ["a.jpg", "b.jpg"], ids, [{"id": 70000, "category_id": 3}, {"id": 5, "category_id": 1}])
    pred = json.loads(writer.close().read_text())
    frames = pred["annotations"][0]["annotations"]
    assert [f["file_name"] for f in frames] == ["a.png", "b.png"]
    assert frames[0]["segments_info"] == [{"id": 70000, "category_id": 3, "iscrowd": 0, "isthing": 0, "area": 8}]
    assert [s["id"] for s in frames[1]["segments_info"]] == [5, 70000]
    from dvis.evaluation.vipseg_io import read_id_png

    np.testing.assert_array_equal(read_id_png(tmp_path / "pan_pred" / "v1" / "b.png"), ids[1])


# ----------------------------------------------------------------------------- CLI


def test_dvis_eval_writes_the_documented_keys(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.json"
    folder = DATA / "ytvis_a_small"
    assert main(["eval", "--gt", str(folder / "gt.json"), "--pred", str(folder / "pred.json"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    expected = json.loads((folder / "expected.json").read_text())
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "ARs", "ARm", "ARl",
            "AP_light", "AP_medium", "AP_heavy", "per_category", "AR100"]
    assert set(keys) == set(result)
    assert result["AP"] == pytest.approx(expected["stats"][0], abs=1e-12)
    assert result["APm"] is None and result["AP_heavy"] is None
    assert result["per_category"]["7"] == pytest.approx(expected["per_category_ap"]["7"], abs=1e-12)
    assert "AP50" in capsys.readouterr().out


def test_dvis_eval_bad_results_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = DATA / "ytvis_a_small"
    entries = json.loads((folder / "pred.json").read_text())
    del entries[3]["video_id"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(entries))
    assert main(["eval", "--gt", str(folder / "gt.json"), "--pred", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "entry 3" in err and "video_id" in err and str(bad) in err


def test_dvis_eval_short_results_warn_by_default_and_fail_with_strict_lengths(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The public code pairs frames up to the shorter list: a result one frame short is scored
    (with a warning naming it); --strict-lengths refuses it with exit status 2."""
    from dvis.evaluation.ytvis_data import FrameCountWarning

    folder = DATA / "ytvis_a_small"
    entries = json.loads((folder / "pred.json").read_text())
    entries[3]["segmentations"] = entries[3]["segmentations"][:-1]
    short = tmp_path / "short.json"
    short.write_text(json.dumps(entries))
    args = ["eval", "--gt", str(folder / "gt.json"), "--pred", str(short)]
    with pytest.warns(FrameCountWarning, match=r"short\.json: 1 result has .*entry 3 has \d+ frames"):
        assert main([*args, "--json", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["AP"] is not None
    capsys.readouterr()
    assert main([*args, "--strict-lengths"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(short) in err and "entry 3" in err and "strict_lengths" in err


def test_dvis_eval_vpq_and_stq(tmp_path: Path) -> None:
    folder = DATA / "vpq_a_small"
    args = ["--gt-json", str(folder / "gt" / "panoptic_gt_VIPSeg_val.json"), "--gt-dir",
            str(folder / "gt" / "panomasksRGB"), "--pred-dir", str(folder / "pred")]
    assert main(["eval-vpq", *args, "--json", str(tmp_path / "vpq.json")]) == 0
    vpq_result = json.loads((tmp_path / "vpq.json").read_text())
    expected = json.loads((folder / "expected.json").read_text())
    assert vpq_result["VPQ"] == pytest.approx(expected["official_main"]["final"]["vpq_all"], abs=1e-9)
    assert vpq_result["k_0_5_10_15"]["VPQ"] == pytest.approx(expected["k_0_5_10_15"]["final"]["vpq_all"], abs=1e-9)
    assert main(["eval-stq", *args, "--json", str(tmp_path / "stq.json")]) == 0
    stq_expected = json.loads((DATA / "stq_a_small" / "expected.json").read_text())
    assert json.loads((tmp_path / "stq.json").read_text())["STQ"] == pytest.approx(stq_expected["STQ"], abs=1e-12)


def test_dvis_eval_vss(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "val.txt").write_text("vid\n")
    for root in (tmp_path / "data" / "vid" / "mask", tmp_path / "pred" / "vid"):
        root.mkdir(parents=True)
    for t in range(10):
        Image.fromarray(np.full((4, 4), 2, np.uint8)).save(tmp_path / "data" / "vid" / "mask" / f"{t:05d}.png")
        Image.fromarray(np.full((4, 4), 1, np.uint8)).save(tmp_path / "pred" / "vid" / f"{t:05d}.png")
    out = tmp_path / "vss.json"
    assert main(["eval-vss", "--gt-dir", str(tmp_path), "--pred-dir", str(tmp_path / "pred"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mIoU"] == 1.0 and result["mVC8"] == 1.0 and result["mVC16_own_windows"] is None
