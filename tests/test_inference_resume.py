"""``dvis segment`` reruns: a partial is reused only when the outputs the options need exist and the
model files (by sha256, not path or mtime) and options are the same; rank 0 says why it rejects one."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from dvis.cli import main
from dvis.data.video import open_video
from dvis.inference import partials
from dvis.inference.partials import differences
from dvis.modeling.io import save_pretrained
from dvis.inference.predictor import VideoPredictor
from inference_helpers import random_frames, save_tiny_model, tiny_model, write_frame_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", num_classes=6)


@pytest.fixture
def count_videos(monkeypatch):
    """Names of the videos pass 1 runs on, in order."""
    calls = []
    original = VideoPredictor.analyse
    monkeypatch.setattr(VideoPredictor, "analyse", lambda self, video, *args, **kwargs: (
        calls.append(video.name), original(self, video, *args, **kwargs))[1])
    return calls


def segment(*args) -> int:
    return main(["segment", *map(str, args), "--quiet"])


def clip(tmp_path, frames: int = 3):
    write_frame_folder(tmp_path / "clip", random_frames(frames))
    return tmp_path / "clip"


def test_rendering_rerun_redoes_a_video_made_with_no_render(tmp_path, model_dir, count_videos, capsys):
    out = tmp_path / "out"
    args = (clip(tmp_path), "--model", model_dir, "--mode", "online", "--out", out)
    assert segment(*args, "--no-render") == 0
    assert not (out / "clip.mp4").exists()
    assert segment(*args) == 0
    assert count_videos == ["clip", "clip"]
    assert "clip: recomputing (its overlay clip.mp4 was not rendered (the run had --no-render))" in capsys.readouterr().err
    assert len(list(open_video(out / "clip.mp4"))) == 3
    assert segment(*args, "--no-render") == 0  # no overlay needed: the partial is used
    assert segment(*args) == 0
    assert count_videos == ["clip", "clip"]


def test_a_deleted_overlay_or_another_render_threshold_redoes_the_video(tmp_path, model_dir, count_videos, capsys):
    out = tmp_path / "out"
    args = (clip(tmp_path), "--model", model_dir, "--mode", "online", "--out", out)
    assert segment(*args) == 0
    first = json.loads((out / "results.json").read_text())
    (out / "clip.mp4").unlink()
    assert segment(*args) == 0
    assert count_videos == ["clip", "clip"] and (out / "clip.mp4").is_file()
    assert "its overlay clip.mp4 is missing" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text()) == first
    assert segment(*args, "--render-threshold", "0.05") == 0
    assert count_videos == ["clip"] * 3
    assert "rendered with --render-threshold 0.3, not 0.05" in capsys.readouterr().err


@pytest.mark.parametrize("task, folder", [("vss", "vss"), ("vps", "pan_pred")])
def test_a_deleted_frame_output_redoes_the_video(tmp_path, model_dir, count_videos, capsys, task, folder):
    out = tmp_path / "out"
    args = (clip(tmp_path), "--model", model_dir, "--mode", "online", "--task", task, "--out", out, "--no-render")
    assert segment(*args) == 0
    record = json.loads((out / ".partial" / "clip.json").read_text())
    assert record["outputs"] == [f"{folder}/clip/{t:05d}.png" for t in range(3)] and record["overlay"] is None
    (out / folder / "clip" / "00001.png").unlink()
    assert segment(*args) == 0
    assert count_videos == ["clip", "clip"] and (out / folder / "clip" / "00001.png").is_file()
    assert f"its output {folder}/clip/00001.png is missing" in capsys.readouterr().err


def copy_model(model_dir, folder):
    """Another machine's copy: same bytes, other path, other modification time."""
    shutil.copytree(model_dir, folder)
    for path in folder.iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
    return folder


def test_partials_identify_the_model_by_content(tmp_path, model_dir, count_videos, capsys):
    out = tmp_path / "out"
    args = (clip(tmp_path), "--mode", "online", "--out", out, "--no-render")
    assert segment(*args, "--model", model_dir) == 0
    copy = copy_model(model_dir, tmp_path / "copy")
    assert segment(*args, "--model", copy) == 0
    assert count_videos == ["clip"]  # same files elsewhere: reused
    save_pretrained(tiny_model(6, seed=1), copy)  # retrained: same names and config, other weights
    capsys.readouterr()
    assert segment(*args, "--model", copy) == 0
    assert count_videos == ["clip", "clip"]
    assert "it was made with other options: model.safetensors sha256 " in capsys.readouterr().err


def test_model_files_are_hashed_once_per_run(tmp_path, model_dir, monkeypatch):
    for name in ("a", "b", "c"):
        write_frame_folder(tmp_path / "videos" / name, random_frames(2))
    hashed = []
    original = partials.file_sha256
    monkeypatch.setattr(partials, "file_sha256", lambda path: hashed.append(path.name) or original(path))
    args = (tmp_path / "videos", "--model", model_dir, "--mode", "online", "--out", tmp_path / "out", "--no-render")
    assert segment(*args) == 0
    assert sorted(hashed) == ["config.yaml", "model.safetensors"]
    record = json.loads((tmp_path / "out" / ".partial" / "a.json").read_text())
    assert record["options"]["model_files"]["model.safetensors"] == original(model_dir / "model.safetensors")


def test_rank0_says_why_it_rejects_a_partial_and_merges_copies(tmp_path, model_dir, monkeypatch, count_videos, capsys):
    for name in ("a", "b"):
        write_frame_folder(tmp_path / "videos" / name, random_frames(2, seed=len(name)))
    out = tmp_path / "out"
    other = tmp_path / "other"
    save_pretrained(tiny_model(6, seed=1), other)
    args = (tmp_path / "videos", "--mode", "online", "--out", out, "--no-render")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert segment(*args, "--model", other) == 0  # rank 1 ran with other weights
    monkeypatch.setenv("RANK", "0")
    capsys.readouterr()
    assert segment(*args, "--model", model_dir, "--merge-timeout", "0") == 2
    err = capsys.readouterr().err
    assert "warning: rank 0: not using the partial of b: it was made with other options: model.safetensors sha256" in err
    assert "b: it was made with other options" in err.split("error: ")[1]  # the error says it too
    monkeypatch.setenv("RANK", "1")
    assert segment(*args, "--model", copy_model(model_dir, tmp_path / "copy")) == 0  # rank 1's own copy
    monkeypatch.setenv("RANK", "0")
    assert segment(*args, "--model", model_dir, "--merge-timeout", "0") == 0
    assert count_videos == ["b", "a", "b"]
    assert {r["video_id"] for r in json.loads((out / "results.json").read_text())} == {"a", "b"}


def test_differences_name_each_changed_option_and_file():
    old = {"mode": "online", "model": None, "model_files": {"config.yaml": "a" * 64, "model.safetensors": "b" * 64}}
    new = {"mode": "minvis", "model": None, "model_files": {"config.yaml": "a" * 64, "model.safetensors": "c" * 64}}
    text = differences(old, new)
    assert "mode 'online' (partial) vs 'minvis' (this run)" in text
    assert f"model.safetensors sha256 {'b' * 12} (partial) vs sha256 {'c' * 12} (this run)" in text
    assert "config.yaml" not in text
    assert "weights absent (partial)" in differences({"model_files": {}}, {"model_files": {"weights": "d" * 64}})


# ----------------------------------------------------------------------------- changed inputs (issue 14.3)


def test_a_video_whose_frames_changed_is_recomputed(tmp_path, model_dir, count_videos, capsys):
    """Fewer frames, or other pixels in as many frames: the partial is stale and the video is redone."""
    out = tmp_path / "out"
    args = (clip(tmp_path, frames=8), "--model", model_dir, "--mode", "online", "--out", out, "--no-render")
    assert segment(*args) == 0
    shutil.rmtree(tmp_path / "clip")
    write_frame_folder(tmp_path / "clip", random_frames(4))
    assert segment(*args) == 0
    assert count_videos == ["clip", "clip"]
    assert "clip: recomputing (its input changed: 4 frame file(s) now, 8 when the partial was made)" in \
        capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results and all(len(entry["segmentations"]) == 4 for entry in results)
    write_frame_folder(tmp_path / "clip", random_frames(4, seed=1))  # same names and count, other pixels
    assert segment(*args) == 0
    assert count_videos == ["clip"] * 3
    assert "its input changed: same number of files, other contents" in capsys.readouterr().err
    assert segment(*args) == 0  # unchanged: the partial is used
    assert count_videos == ["clip"] * 3


def test_a_video_file_that_changed_is_recomputed(tmp_path, model_dir, count_videos, capsys):
    from inference_helpers import write_video

    video, out = tmp_path / "v.mp4", tmp_path / "out"
    write_video(video, random_frames(6))
    args = (video, "--model", model_dir, "--mode", "online", "--out", out, "--no-render")
    assert segment(*args) == 0
    write_video(video, random_frames(3, seed=2))
    assert segment(*args) == 0
    assert count_videos == ["v", "v"] and "v: recomputing (its input changed" in capsys.readouterr().err
    assert all(len(entry["segmentations"]) == 3 for entry in json.loads((out / "results.json").read_text()))


def test_a_partial_without_a_recorded_input_is_recomputed(tmp_path, model_dir, count_videos, capsys):
    out = tmp_path / "out"
    args = (clip(tmp_path), "--model", model_dir, "--mode", "online", "--out", out, "--no-render")
    assert segment(*args) == 0
    record = json.loads((out / ".partial" / "clip.json").read_text())
    assert record["source"]["files"] == 3 and len(record["source"]["sha256"]) == 64
    del record["source"]  # as written by an older dvis
    (out / ".partial" / "clip.json").write_text(json.dumps(record))
    assert segment(*args) == 0
    assert count_videos == ["clip", "clip"]
    assert "its partial does not record its input (older format)" in capsys.readouterr().err
