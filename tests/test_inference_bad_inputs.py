"""Bad input to ``dvis segment`` / ``VideoPredictor``: a clear ``error: ...``, exit 2, nothing written.

"Nothing written": no results, partial or overlay, and an output folder that did not exist is not
created (it is made only once the inputs, the model and the categories have been checked).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from dvis.cli import main
from dvis.data.video import open_video
from dvis.errors import CheckpointError, ConfigError, InputError
from dvis.inference import registry
from dvis.inference.predictor import VideoPredictor
from inference_helpers import random_frames, save_tiny_model, write_faststart_mp4, write_frame_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", num_classes=6)


def segment(*args) -> int:
    return main(["segment", *map(str, args), "--quiet"])


def fails(capsys, *args, match: str, out) -> None:
    """``dvis segment *args --out out`` exits 2 with an error naming ``match`` and writes nothing."""
    existed = out.exists()
    assert segment(*args, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") or "\nerror: " in err, err
    assert match in err, err
    assert_nothing_written(out, existed)


def assert_nothing_written(out, existed: bool = False) -> None:
    if not existed:
        assert not out.exists(), f"{out} was created"
    elif out.is_dir():
        assert not (out / "results.json").exists() and not (out / "pred.json").exists()
        assert not (out / ".partial").exists()
        assert not list(out.glob("*.mp4")) and not list(out.glob(".*.mp4"))


def test_missing_input(tmp_path, model_dir, capsys):
    fails(capsys, tmp_path / "nope.mp4", "--model", model_dir, out=tmp_path / "out",
          match=f"input {tmp_path / 'nope.mp4'} does not exist")


def test_non_video_file(tmp_path, model_dir, capsys):
    (tmp_path / "notes.mp4").write_text("not a video at all\n" * 20)
    fails(capsys, tmp_path / "notes.mp4", "--model", model_dir, out=tmp_path / "out",
          match="notes.mp4 cannot be read as a video")


def test_folder_with_zero_frames(tmp_path, model_dir, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    fails(capsys, tmp_path / "empty", "--model", model_dir, out=tmp_path / "out", match="has zero frames")


def test_mixed_frame_sizes(tmp_path, model_dir, capsys):
    write_frame_folder(tmp_path / "clip", random_frames(2) + random_frames(1, height=32))
    fails(capsys, tmp_path / "clip", "--model", model_dir, out=tmp_path / "out",
          match="00002.png is 56x32 but the first frame")


def test_one_bad_video_among_many_fails_before_any_work(tmp_path, model_dir, capsys):
    write_frame_folder(tmp_path / "videos" / "a", random_frames(2))
    (tmp_path / "videos" / "b.mp4").write_bytes(b"\x00" * 100)
    fails(capsys, tmp_path / "videos", "--model", model_dir, out=tmp_path / "out",
          match="b.mp4 cannot be read as a video")


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


def test_unwritable_output_folder(tmp_path, model_dir, capsys, monkeypatch):
    write_frame_folder(tmp_path / "clip", random_frames(2))
    (tmp_path / "file").write_text("x")
    fails(capsys, tmp_path / "clip", "--model", model_dir, out=tmp_path / "file" / "out",
          match=f"output folder {tmp_path / 'file' / 'out'} is not writable: {tmp_path / 'file'} is not a folder")
    assert (tmp_path / "file").read_text() == "x"
    analysed = []
    monkeypatch.setattr(VideoPredictor, "analyse", lambda self, *a, **k: analysed.append(a))
    if os.geteuid() != 0:  # root ignores permission bits
        (tmp_path / "locked").mkdir(mode=0o500)
        fails(capsys, tmp_path / "clip", "--model", model_dir, out=tmp_path / "locked", match="is not writable")
        fails(capsys, tmp_path / "clip", "--model", model_dir, out=tmp_path / "locked" / "new", match="is not writable")
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # what a read-only folder does, even for root
    fails(capsys, tmp_path / "clip", "--model", model_dir, out=tmp_path / "ro" / "out",
          match=f"output folder {tmp_path / 'ro' / 'out'} is not writable: Permission denied")
    assert not analysed  # checked before any video is processed


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
    fails(capsys, tmp_path / "clip", "--model", online_only, "--mode", "offline", out=tmp_path / "out",
          match="needs a refiner")


def test_ytvis_json_with_other_categories(tmp_path, model_dir, capsys):
    from dvis.data.synthetic import generate

    ann = generate(tmp_path / "set", videos=1, frames=2, seed=0, height=32, width=32)
    data = json.loads(ann.read_text())
    data["categories"] = data["categories"][:2]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in (1, 2)]
    ann.write_text(json.dumps(data))
    fails(capsys, ann, "--model", model_dir, out=tmp_path / "out", match="has 2 categories but the model predicts 6")


def test_a_failed_start_leaves_no_output_folder(tmp_path, model_dir, capsys):
    write_frame_folder(tmp_path / "clip", random_frames(2))
    out = tmp_path / "new" / "out"
    fails(capsys, tmp_path / "clip", "--model", "no-such-model", out=out, match="unknown model 'no-such-model'")
    preset = "dvis-online-ovis-r50"
    fails(capsys, tmp_path / "clip", "--model", preset, out=out, match="--weights FILE.pth")
    fails(capsys, tmp_path / "clip", "--model", preset, "--weights", tmp_path / "x.pth", out=out,
          match=f"weights file {tmp_path / 'x.pth'} does not exist")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    fails(capsys, tmp_path / "clip", "--model", preset, "--weights", tmp_path / "junk.pth", out=out,
          match="junk.pth: not a readable weights-only checkpoint")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"junk")
    fails(capsys, tmp_path / "clip", "--model", broken, out=out, match="not a readable safetensors")
    assert not (tmp_path / "new").exists()


def test_a_folder_frame_that_does_not_decode_ends_the_video_with_a_warning(tmp_path, model_dir, capsys):
    write_frame_folder(tmp_path / "clip", random_frames(6))
    bad = tmp_path / "clip" / "00004.png"
    bad.write_bytes(bad.read_bytes()[:200])  # the header reads, the pixel data is cut
    out = tmp_path / "out"
    assert segment(tmp_path / "clip", "--model", model_dir, "--mode", "online", "--out", out) == 0
    err = capsys.readouterr().err
    assert f"warning: frames of 'clip': frame 4 ({bad}) cannot be decoded; kept the 4 frames before it" in err
    results = json.loads((out / "results.json").read_text())
    assert results and all(len(r["segmentations"]) == 4 for r in results)
    assert len(list(open_video(out / "clip.mp4"))) == 4
    with pytest.warns(RuntimeWarning, match=r"frame 4 \(.*00004.png\) cannot be decoded"):
        instances = VideoPredictor(registry.load_model(model_dir, device="cpu"), mode="online")(tmp_path / "clip")
    assert instances.num_frames == 4


def test_a_first_frame_that_does_not_decode_is_an_error(tmp_path, model_dir, capsys):
    write_frame_folder(tmp_path / "clip", random_frames(3))
    bad = tmp_path / "clip" / "00000.png"
    bad.write_bytes(bad.read_bytes()[:200])
    assert segment(tmp_path / "clip", "--model", model_dir, "--mode", "online", "--out", tmp_path / "out") == 2
    assert f"error: image file {bad} cannot be read as an image" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists() and not (tmp_path / "out" / "clip.mp4").exists()
