"""``dvis segment``: inputs, outputs, YouTube-VIS ids, resume, atomic merge, sharding, demo."""

from __future__ import annotations

import json
import os

import pytest

from dvis.cli import main
from dvis.data.synthetic import generate
from dvis.data.video import open_video
from dvis.inference.predictor import VideoPredictor
from dvis.inference.segment import SegmentRun
from inference_helpers import random_frames, save_tiny_model, write_frame_folder, write_video


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", num_classes=6)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A YouTube-VIS set of two 5-frame videos (6 categories)."""
    return generate(tmp_path_factory.mktemp("synth") / "set", videos=2, frames=5, seed=3, height=40, width=56)


@pytest.fixture
def count_videos(monkeypatch):
    """Counts the videos the predictor runs pass 1 on."""
    calls = []
    original = VideoPredictor.analyse

    def counting(self, video, *args, **kwargs):
        calls.append(getattr(video, "name", video))
        return original(self, video, *args, **kwargs)

    monkeypatch.setattr(VideoPredictor, "analyse", counting)
    return calls


def segment(*args) -> int:
    return main(["segment", *map(str, args), "--quiet"])


def load(path):
    return json.loads(path.read_text())


def test_frame_folder_gives_results_and_overlay(tmp_path, model_dir):
    frames = random_frames(5)
    write_frame_folder(tmp_path / "clip", frames)
    assert segment(tmp_path / "clip", "--model", model_dir, "--mode", "online", "--out", tmp_path / "out") == 0
    results = load(tmp_path / "out" / "results.json")
    assert results and {r["video_id"] for r in results} == {"clip"} and results[0]["video_name"] == "clip"
    assert all(len(r["segmentations"]) == 5 and r["segmentations"][0]["size"] == [40, 56] for r in results)
    overlay = open_video(tmp_path / "out" / "clip.mp4")
    assert (overlay.width, overlay.height) == (56, 40) and overlay.fps == 30 and len(list(overlay)) == 5


def test_video_file_input_keeps_fps_and_length(tmp_path, model_dir):
    write_video(tmp_path / "walk.mp4", random_frames(6, height=32, width=48), fps=12)
    assert segment(tmp_path / "walk.mp4", "--model", model_dir, "--mode", "minvis", "--out", tmp_path / "out") == 0
    results = load(tmp_path / "out" / "results.json")
    assert results and all(len(r["segmentations"]) == 6 and r["video_id"] == "walk" for r in results)
    overlay = open_video(tmp_path / "out" / "walk.mp4")
    assert overlay.fps == pytest.approx(12) and len(list(overlay)) == 6


def test_ytvis_json_keeps_ids_and_dvis_eval_reads_the_output(tmp_path, model_dir, synth, capsys):
    out = tmp_path / "out"
    assert segment(synth, "--model", model_dir, "--mode", "semi-online", "--clip-len", "2", "--out", out,
                   "--no-render") == 0
    results = load(out / "results.json")
    gt = load(synth)
    assert {r["video_id"] for r in results} == {v["id"] for v in gt["videos"]}
    assert {r["category_id"] for r in results} <= {c["id"] for c in gt["categories"]}
    assert not list(out.glob("*.mp4"))
    capsys.readouterr()
    assert main(["eval", "--gt", str(synth), "--pred", str(out / "results.json")]) == 0
    assert "AP50" in capsys.readouterr().out


def test_folder_of_videos_resumes_and_skips_finished_ones(tmp_path, model_dir, count_videos):
    for name in ("a", "b"):
        write_frame_folder(tmp_path / "videos" / name, random_frames(3, seed=len(name)))
    args = (tmp_path / "videos", "--model", model_dir, "--mode", "online", "--out", tmp_path / "out", "--no-render")
    assert segment(*args) == 0
    assert sorted(count_videos) == ["a", "b"]
    first = load(tmp_path / "out" / "results.json")
    (tmp_path / "out" / ".partial" / "b.json").unlink()
    assert segment(*args) == 0
    assert count_videos[2:] == ["b"]  # only the video without a partial was recomputed
    assert load(tmp_path / "out" / "results.json") == first
    assert segment(*args[:-1], "--mode", "minvis", "--no-render") == 0  # other options: recomputed
    assert sorted(count_videos[3:]) == ["a", "b"]


def test_interrupted_run_leaves_no_results_and_resumes(tmp_path, model_dir, monkeypatch, count_videos):
    for name in ("a", "b"):
        write_frame_folder(tmp_path / "videos" / name, random_frames(3, seed=len(name)))
    out = tmp_path / "out"
    original = SegmentRun._write_outputs

    def interrupt_on_b(self, job, source, analysis):
        if job.name == "b":
            raise KeyboardInterrupt
        return original(self, job, source, analysis)

    monkeypatch.setattr(SegmentRun, "_write_outputs", interrupt_on_b)
    args = (tmp_path / "videos", "--model", model_dir, "--mode", "online", "--out", out)
    assert segment(*args) == 130
    assert not (out / "results.json").exists() and not (out / "b.mp4").exists()
    assert (out / ".partial" / "a.json").exists() and (out / "a.mp4").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.is_file()]  # no temp files
    monkeypatch.setattr(SegmentRun, "_write_outputs", original)
    assert segment(*args) == 0
    assert count_videos == ["a", "b", "b"]
    assert {r["video_id"] for r in load(out / "results.json")} == {"a", "b"}


def test_interrupted_results_write_leaves_nothing(tmp_path, model_dir, monkeypatch):
    write_frame_folder(tmp_path / "clip", random_frames(2))
    out = tmp_path / "out"

    def fail(_fd):
        raise KeyboardInterrupt

    from dvis.evaluation import writers

    original_write = writers.write_ytvis_results

    def write_then_fail(path, entries):
        monkeypatch.setattr(os, "fsync", fail)
        return original_write(path, entries)

    monkeypatch.setattr("dvis.inference.segment.write_ytvis_results", write_then_fail)
    assert segment(tmp_path / "clip", "--model", model_dir, "--mode", "online", "--out", out, "--no-render") == 130
    assert not (out / "results.json").exists()
    assert not list(out.glob(".results.json*"))


def test_torchrun_shards_and_rank0_merges(tmp_path, model_dir, monkeypatch, count_videos, capsys):
    for name in ("a", "b", "c"):
        write_frame_folder(tmp_path / "videos" / name, random_frames(2, seed=len(name)))
    args = (tmp_path / "videos", "--model", model_dir, "--mode", "online", "--out", tmp_path / "out", "--no-render")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert segment(*args, "--merge-timeout", "0") == 2  # rank 1 has not run: no merge
    assert "no partial result" in capsys.readouterr().err and not (tmp_path / "out" / "results.json").exists()
    assert count_videos == ["a", "c"]
    monkeypatch.setenv("RANK", "1")
    assert segment(*args) == 0
    assert count_videos[2:] == ["b"] and not (tmp_path / "out" / "results.json").exists()
    monkeypatch.setenv("RANK", "0")
    assert segment(*args) == 0
    assert count_videos[3:] == []
    assert [r["video_id"] for r in load(tmp_path / "out" / "results.json")][:1] == ["a"]
    assert {r["video_id"] for r in load(tmp_path / "out" / "results.json")} == {"a", "b", "c"}


def test_vps_and_vss_outputs(tmp_path, model_dir):
    write_frame_folder(tmp_path / "clip", random_frames(3))
    out = tmp_path / "vps"
    assert segment(tmp_path / "clip", "--model", model_dir, "--mode", "offline", "--task", "vps", "--out", out) == 0
    pred = load(out / "pred.json")["annotations"]
    assert [a["video_id"] for a in pred] == ["clip"]
    assert [f["file_name"] for f in pred[0]["annotations"]] == ["00000.png", "00001.png", "00002.png"]
    assert all((out / "pan_pred" / "clip" / f"{t:05d}.png").exists() for t in range(3))
    out = tmp_path / "vss"
    assert segment(tmp_path / "clip", "--model", model_dir, "--mode", "online", "--task", "vss", "--out", out) == 0
    from PIL import Image

    maps = [Image.open(out / "vss" / "clip" / f"{t:05d}.png") for t in range(3)]
    assert all(m.size == (56, 40) for m in maps) and (out / "clip.mp4").exists()


def test_demo_runs_with_a_model_folder(tmp_path, model_dir, capsys):
    from dvis.demo import main as demo

    assert demo(["--model", str(model_dir), "--out", str(tmp_path / "demo"), "--frames", "6", "--size", "40", "56",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "AP50" in printed and (tmp_path / "demo" / "results.json").exists()
    assert list((tmp_path / "demo").glob("*.mp4"))


def test_demo_without_the_demo_model_fails_clearly(tmp_path, monkeypatch, capsys):
    from dvis.demo import main as demo
    from dvis.inference import registry

    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path / "models")
    assert demo(["--out", str(tmp_path / "demo")]) == 2
    assert "'synthetic-demo' is not installed" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
