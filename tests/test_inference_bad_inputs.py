"""Bad input to ``dvis segment`` / ``VideoPredictor``: a clear ``error: ...``, exit 2, nothing written."""

from __future__ import annotations

import json
import os

import pytest

from dvis.cli import main
from dvis.errors import CheckpointError, ConfigError, InputError
from dvis.inference import registry
from dvis.inference.predictor import VideoPredictor
from inference_helpers import random_frames, save_tiny_model, write_faststart_mp4, write_frame_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", num_classes=6)


def segment(*args) -> int:
    return main(["segment", *map(str, args), "--quiet"])


def fails(capsys, *args, match: str, out=None) -> None:
    assert segment(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") or "\nerror: " in err, err
    assert match in err, err
    if out is not None:
        assert not (out / "results.json").exists()
        assert not list(out.glob("*.mp4"))


def test_missing_input(tmp_path, model_dir, capsys):
    fails(capsys, tmp_path / "nope.mp4", "--model", model_dir, "--out", tmp_path / "out",
          match=f"input {tmp_path / 'nope.mp4'} does not exist")


def test_non_video_file(tmp_path, model_dir, capsys):
    (tmp_path / "notes.mp4").write_text("not a video at all\n" * 20)
    fails(capsys, tmp_path / "notes.mp4", "--model", model_dir, "--out", tmp_path / "out",
          match="notes.mp4 cannot be read as a video", out=tmp_path / "out")


def test_folder_with_zero_frames(tmp_path, model_dir, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    fails(capsys, tmp_path / "empty", "--model", model_dir, "--out", tmp_path / "out", match="has zero frames")


def test_mixed_frame_sizes(tmp_path, model_dir, capsys):
    write_frame_folder(tmp_path / "clip", random_frames(2) + random_frames(1, height=32))
    fails(capsys, tmp_path / "clip", "--model", model_dir, "--out", tmp_path / "out",
          match="00002.png is 56x32 but the first frame", out=tmp_path / "out")


def test_one_bad_video_among_many_fails_before_any_work(tmp_path, model_dir, capsys):
    write_frame_folder(tmp_path / "videos" / "a", random_frames(2))
    (tmp_path / "videos" / "b.mp4").write_bytes(b"\x00" * 100)
    fails(capsys, tmp_path / "videos", "--model", model_dir, "--out", tmp_path / "out",
          match="b.mp4 cannot be read as a video", out=tmp_path / "out")
    assert not (tmp_path / "out" / ".partial" / "a.json").exists()


def test_truncated_video_processes_what_decodes_and_warns(tmp_path, model_dir, capsys):
    write_faststart_mp4(tmp_path / "cut.mp4", random_frames(30, height=32, width=48))
    data = (tmp_path / "cut.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert segment(tmp_path / "cut.mp4", "--model", model_dir, "--mode", "online", "--out", out) == 0
    err = capsys.readouterr().err
    assert "warning: video file" in err and "frame" in err
    results = json.loads((out / "results.json").read_text())
    decoded = len(results[0]["segmentations"])
    assert 0 < decoded < 30
    assert f"frame {decoded}" in err


def test_unwritable_output_folder(tmp_path, model_dir, capsys):
    write_frame_folder(tmp_path / "clip", random_frames(2))
    (tmp_path / "file").write_text("x")
    fails(capsys, tmp_path / "clip", "--model", model_dir, "--out", tmp_path / "file" / "out",
          match="is not writable")
    if os.geteuid() != 0:  # root ignores permission bits
        (tmp_path / "locked").mkdir(mode=0o500)
        fails(capsys, tmp_path / "clip", "--model", model_dir, "--out", tmp_path / "locked", match="is not writable")


def test_model_names(tmp_path, monkeypatch, model_dir):
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path / "models")
    with pytest.raises(ConfigError, match=r"unknown model 'no-such-model'.*synthetic-demo \(not installed\)"):
        registry.load_model("no-such-model")
    with pytest.raises(CheckpointError, match="'synthetic-demo' is registered but not installed"):
        VideoPredictor.from_pretrained("synthetic-demo")
    (tmp_path / "models").mkdir()
    save_tiny_model(tmp_path / "models" / "synthetic-demo", num_classes=6)
    predictor = VideoPredictor.from_pretrained("synthetic-demo", device="cpu", mode="online")
    assert predictor.config.mode == "online" and predictor.device.type == "cpu"
    with pytest.raises(InputError, match="unknown inference option"):
        VideoPredictor.from_pretrained(model_dir, mood="offline")


def test_release_preset_needs_an_existing_weights_file(tmp_path):
    name = "dvis-offline-ovis-r50"
    assert name in registry.preset_names()
    with pytest.raises(InputError, match="--weights FILE.pth"):
        registry.load_model(name)
    with pytest.raises(CheckpointError, match=f"weights file {tmp_path / 'x.pth'} does not exist"):
        registry.load_model(name, weights=tmp_path / "x.pth")


def test_mode_the_model_cannot_run(tmp_path, capsys):
    online_only = save_tiny_model(tmp_path / "online", num_classes=6, online_only=True)
    write_frame_folder(tmp_path / "clip", random_frames(2))
    fails(capsys, tmp_path / "clip", "--model", online_only, "--mode", "offline", "--out", tmp_path / "out",
          match="needs a refiner")


def test_ytvis_json_with_other_categories(tmp_path, model_dir, capsys):
    from dvis.data.synthetic import generate

    ann = generate(tmp_path / "set", videos=1, frames=2, seed=0, height=32, width=32)
    data = json.loads(ann.read_text())
    data["categories"] = data["categories"][:2]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in (1, 2)]
    ann.write_text(json.dumps(data))
    fails(capsys, ann, "--model", model_dir, "--out", tmp_path / "out", match="has 2 categories but the model predicts 6")
