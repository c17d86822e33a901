"""Hostile or odd inputs found by trying the tool hard (issue 14, items 2, 5 and 7): each gives one
``error: ...`` line (exit 2) naming the file, field or flag, writes nothing outside ``--out`` and
reads nothing outside the frames folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from dvis.cli import main
from dvis.data.synthetic import generate
from dvis.errors import CheckpointError, DataError
from inference_helpers import random_frames, save_tiny_model, write_frame_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", num_classes=6)


@pytest.fixture(scope="module")
def ytvis_set(tmp_path_factory) -> Path:
    """annotations.json + JPEGImages/ of 1 video x 3 frames (32x32)."""
    return generate(tmp_path_factory.mktemp("set") / "set", videos=1, frames=3, seed=0, height=32, width=32)


def one_error(capsys, argv: list[str]) -> str:
    """Runs ``dvis ARGV``: exit 2 and exactly one stderr line, ``error: ...``; returns that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


def edited_set(ytvis_set: Path, tmp_path: Path, edit) -> Path:
    """A copy of the set's JSON (frames stay where they are: --frames-root) with ``edit(data)`` applied."""
    data = json.loads(ytvis_set.read_text())
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return path


def segment_json(path: Path, ytvis_set: Path, model_dir: Path, out: Path) -> list[str]:
    return ["segment", str(path), "--frames-root", str(ytvis_set.parent / "JPEGImages"), "--model", str(model_dir),
            "--mode", "online", "--out", str(out), "--quiet"]


# ----------------------------------------------------------------------------- item 2: paths


@pytest.mark.parametrize("name, reason", [
    ("../../escaped", "holds a '/'"), ("ABSOLUTE", "holds a '/'"), ("..", "is '..'"),
    ("a\0b", "holds a NUL byte"), ("n" * 300, "is 300 bytes long (at most 200)"), ("a\nb", "control character"),
])
def test_video_names_that_would_leave_out_are_refused(ytvis_set, model_dir, tmp_path, capsys, name, reason):
    name = str(tmp_path / "abs") if name == "ABSOLUTE" else name
    path = edited_set(ytvis_set, tmp_path, lambda data: data["videos"][0].update(name=name))
    out = tmp_path / "deep" / "er" / "out"
    err = one_error(capsys, segment_json(path, ytvis_set, model_dir, out))
    assert err.startswith(f"error: {path}: video ") and reason in err and "must stay inside --out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.json"]  # nothing written anywhere


def test_a_string_video_id_is_checked_like_a_name(ytvis_set, model_dir, tmp_path, capsys):
    """Videos with equal names are named by their ids, which may be strings."""
    def edit(data):
        data["videos"].append({**data["videos"][0], "id": "../x"})
        for video in data["videos"]:
            video["name"] = "same"

    path = edited_set(ytvis_set, tmp_path, edit)
    err = one_error(capsys, segment_json(path, ytvis_set, model_dir, tmp_path / "out"))
    assert "video '../x': video name '../x' holds a '/'" in err and not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("bad, reason", [("../../../../etc/hostname", "climbs out of its folder with '..'"),
                                         ("/etc/hostname", "is an absolute path"),
                                         ("a\0b.jpg", "holds a NUL byte"),
                                         ("v/" + "f" * 300 + ".jpg", "has a part longer than 255 bytes")])
def test_frame_paths_must_stay_inside_the_frames_folder(ytvis_set, model_dir, tmp_path, capsys, bad, reason):
    path = edited_set(ytvis_set, tmp_path, lambda data: data["videos"][0]["file_names"].__setitem__(1, bad))
    err = one_error(capsys, segment_json(path, ytvis_set, model_dir, tmp_path / "out"))
    assert f"{path}: video 1, field 'file_names'[1]:" in err and reason in err


def test_eval_vpq_png_paths_must_stay_inside_their_folders(tmp_path, capsys):
    gt = {"videos": [{"video_id": "../../v", "images": [{"id": 1, "file_name": "0.png"}]}],
          "annotations": [{"video_id": "../../v", "annotations": [{"segments_info": []}]}],
          "categories": [{"id": 1, "isthing": 1}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "pred.json").write_text(json.dumps({"annotations": gt["annotations"]}))
    argv = ["eval-vpq", "--gt-json", str(tmp_path / "gt.json"), "--gt-dir", str(tmp_path / "gt"), "--pred-dir",
            str(tmp_path / "pred")]
    assert "field 'video_id': '../../v' holds a '/'" in one_error(capsys, argv)
    gt["videos"][0]["video_id"] = gt["annotations"][0]["video_id"] = "v"
    gt["videos"][0]["images"][0]["file_name"] = "../../../x.png"
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred" / "pred.json").write_text(json.dumps({"annotations": gt["annotations"]}))
    assert "field 'file_name': '../../../x.png' climbs out of its folder" in one_error(capsys, argv)


def test_a_300_character_path_on_the_command_line_is_one_line(model_dir, tmp_path, capsys):
    long = str(tmp_path / ("x" * 300))
    write_frame_folder(tmp_path / "clip", random_frames(1))
    for argv in (["segment", long, "--model", str(model_dir), "--out", str(tmp_path / "o")],
                 ["segment", str(tmp_path / "clip"), "--model", long, "--out", str(tmp_path / "o")],
                 ["eval", "--gt", long, "--pred", long]):
        assert "File name too long" in one_error(capsys, argv)


# ----------------------------------------------------------------------------- item 5: tracebacks


def test_an_unknown_device_name_fails_before_any_work(ytvis_set, model_dir, tmp_path, capsys, monkeypatch):
    from dvis.inference import segment

    monkeypatch.setattr(segment, "locate_model", lambda *a: pytest.fail("the model was looked up"))
    err = one_error(capsys, ["segment", str(ytvis_set.parent / "JPEGImages" / "video_0001"), "--model",
                             str(model_dir), "--out", str(tmp_path / "o"), "--device", "gpu"])
    assert err == "error: device 'gpu' is not a device name; use auto, cpu, cuda, cuda:N or mps"


@pytest.mark.parametrize("case", ["folder", "no categories", "huge score", "deep gt", "deep results"])
def test_eval_inputs_that_crashed(ytvis_set, tmp_path, capsys, case):
    gt = json.loads(ytvis_set.read_text())
    results = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.5,
                "segmentations": a["segmentations"]} for a in gt["annotations"]]
    gt_path, results_path, deep = tmp_path / "gt.json", tmp_path / "res.json", tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    if case == "no categories":
        gt["categories"] = []
    if case == "huge score":
        results[0]["score"] = 10 ** 400
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results))
    argv = {"folder": ["--gt", str(tmp_path), "--pred", str(results_path)],
            "deep gt": ["--gt", str(deep), "--pred", str(results_path)],
            "deep results": ["--gt", str(gt_path), "--pred", str(deep)]}.get(case, ["--gt", str(gt_path), "--pred",
                                                                                 str(results_path)])
    expected = {"folder": f"{tmp_path} is a folder; expected a JSON file",
                "no categories": f"{gt_path}: field 'categories' is empty",
                "huge score": f"{results_path}: entry 0: field 'score' must be a finite number, got an integer of "
                              "401 digits",
                "deep gt": f"{deep} is nested too deeply", "deep results": f"{deep} is nested too deeply"}[case]
    assert one_error(capsys, ["eval", *argv]).startswith(f"error: {expected}")


def test_segment_json_input_nested_too_deeply(ytvis_set, model_dir, tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("{\"videos\": " + "[" * 100_000 + "]" * 100_000 + "}")
    err = one_error(capsys, segment_json(deep, ytvis_set, model_dir, tmp_path / "out"))
    assert err.startswith(f"error: annotation file {deep} is nested too deeply")


def test_training_checkpoints_that_are_empty_pickled_or_not_finite(tmp_path):
    from dvis.compat.checkpoint import read_state_dict
    from dvis.training.checkpoint import load_checkpoint, save_checkpoint

    empty = tmp_path / "last.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(empty, "segmenter")
    assert str(info.value) == f"{empty}: not a readable training checkpoint: the file is empty (0 bytes)"

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    pickled = tmp_path / "pickled.pt"
    torch.save({"model": Payload()}, pickled)
    for load in (lambda: load_checkpoint(pickled, "segmenter"), lambda: read_state_dict(pickled)):
        with pytest.raises(CheckpointError) as info:
            load()
        message = str(info.value)
        assert "it holds the Python object posix.system, which a weights-only load refuses" in message
        assert "weights_only` set to `False`" not in message and "weights_only=False" not in message
        assert "\n" not in message

    nan = tmp_path / "nan" / "last.pt"
    save_checkpoint(nan, {"stage": "segmenter", "iteration": 2,
                          "model": {"a.weight": torch.ones(3), "b.bias": torch.tensor([0.0, float("nan")])}})
    with pytest.raises(CheckpointError, match=rf"{nan}: the checkpoint holds non-finite weights \(NaN or infinite "
                                              r"values in 1 tensor\(s\) of 'model': b\.bias\)"):
        load_checkpoint(nan, "segmenter")


# ----------------------------------------------------------------------------- item 7: command line


def test_train_takes_the_stage_after_the_overrides(tmp_path, monkeypatch, capsys):
    from dvis.training import loop

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "o"), "data": {"root": str(tmp_path)}}))
    calls = []

    class Result:
        model_dir, iteration = None, 0

    monkeypatch.setattr(loop, "train", lambda config, stage, **kw: calls.append((stage, config.solver.max_iter))
                        or Result())
    for argv in (["train", "tracker", "--config", str(config), "solver.max_iter=7"],
                 ["train", "--config", str(config), "solver.max_iter=7", "tracker"],
                 ["train", "--config", str(config), "tracker", "solver.max_iter=7", "--no-progress"]):
        assert main(argv) == 0, capsys.readouterr().err
    assert calls == [("tracker", 7)] * 3
    assert "name one stage to train" in one_error(capsys, ["train", "--config", str(config), "solver.max_iter=7"])
    assert "got segmenter, tracker" in one_error(capsys, ["train", "segmenter", "--config", str(config), "tracker"])


def test_semi_online_without_clip_len_fails_before_the_model_loads(model_dir, tmp_path, capsys, monkeypatch):
    from dvis.inference import predictor

    monkeypatch.setattr(predictor.VideoPredictor, "from_pretrained", lambda *a, **k: pytest.fail("model loaded"))
    write_frame_folder(tmp_path / "clip", random_frames(2))
    err = one_error(capsys, ["segment", str(tmp_path / "clip"), "--model", str(model_dir), "--out",
                             str(tmp_path / "o"), "--mode", "semi-online"])
    assert err.startswith("error: --mode semi-online needs --clip-len N")
    with pytest.raises(SystemExit):
        main(["segment", str(tmp_path / "clip"), "--model", "m", "--out", "o", "--clip-len", "0"])
    assert "--clip-len: expected at least 1 frame, got 0" in capsys.readouterr().err


def test_urls_are_refused_unmangled(model_dir, tmp_path, capsys):
    err = one_error(capsys, ["segment", "https://example.com/v.mp4", "--model", str(model_dir), "--out",
                             str(tmp_path / "o")])
    assert err == ("error: input https://example.com/v.mp4: URLs are not supported; download the file and pass "
                   "its local path")
    err = one_error(capsys, ["eval", "--gt", "https://example.com/gt.json", "--pred", "x.json"])
    assert "https://example.com/gt.json: URLs are not supported" in err


def test_vipseg_and_ytvis_readers_refuse_paths_out_of_their_folders(ytvis_set, tmp_path):
    from dvis.data.ytvis import YTVISDataset

    path = edited_set(ytvis_set, tmp_path, lambda data: data["videos"][0]["file_names"].__setitem__(0, "../x.jpg"))
    with pytest.raises(DataError, match=r"field 'file_names'\[0\]: '\.\./x\.jpg' climbs out of its folder"):
        YTVISDataset(path, ytvis_set.parent / "JPEGImages", check_files=False)
