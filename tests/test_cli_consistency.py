"""One command line: the same flag spellings everywhere, percent AP, --version, ``python -m dvis``,
defaults, results options (--max-num, --score-threshold, --one-class-per-track), progress and the
end-of-run summary, the VPS warning, ``cuda:N`` for training."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dvis import __version__
from dvis.cli import build_parser, main
from dvis.errors import ConfigError
from dvis.inference.predictor import VideoPredictor
from dvis.inference.results import TrackedInstances, best_per_track, select_entries
from dvis.modeling.io import save_pretrained
from dvis.training import distributed
from golden_files import DATA
from inference_helpers import random_frames, save_tiny_model, tiny_model, write_frame_folder

SRC = Path(__file__).resolve().parent.parent / "src"


def test_python_m_dvis_and_version():
    env_path = {"PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-m", "dvis", "--version"], capture_output=True, text=True,
                          env={**__import__("os").environ, **env_path}, timeout=900)  # a loaded machine
    assert done.returncode == 0 and done.stdout.strip() == f"dvis {__version__}"
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_argument_has_help_and_progress_is_spelled_no_progress():
    for name, sub in subcommands().items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"dvis {name}: {action.option_strings or action.dest} has no help"
        shown = {option for a in sub._actions if a.help != argparse.SUPPRESS for option in a.option_strings}
        assert "--quiet" not in shown
    for name in ("segment", "train"):
        assert "--no-progress" in subcommands()[name]._option_string_actions


@pytest.mark.parametrize("flag", ["--no-progress", "--quiet"])
def test_both_progress_spellings_work(flag):
    parser = build_parser()
    assert parser.parse_args(["segment", "v.mp4", "--model", "m", "--out", "o", flag]).no_progress
    assert parser.parse_args(["train", "segmenter", flag, "--config", "c.yaml"]).no_progress
    from dvis.demo import parse_args

    assert parse_args([flag]).no_progress


def test_synth_has_defaults():
    args = build_parser().parse_args(["synth", "out"])
    assert (args.videos, args.frames, args.seed, args.height, args.width) == (1, 60, 0, 128, 128)


def test_dvis_eval_prints_percent_and_takes_both_spellings(tmp_path, capsys):
    folder = DATA / "metrics_example" / "ytvis_a_small"
    gt, pred = str(folder / "gt.json"), str(folder / "pred.json")
    assert main(["eval", "--gt-json", gt, "--pred-json", pred, "--json", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "r.json").read_text())
    assert 0 < result["AP"] < 1  # the JSON keeps the evaluator's fraction
    line = re.search(r"^AP\s+(\S+)$", printed, re.M).group(1)
    assert line == f"{100 * result['AP']:.1f}"
    assert re.search(r"^AP_heavy\s+n/a$", printed, re.M)
    assert main(["eval", "--gt", gt, "--pred", pred]) == 0  # the earlier spelling
    assert capsys.readouterr().out == printed.rsplit("wrote ", 1)[0]
    assert main(["eval", "--gt-json", gt]) == 2
    assert "needs --pred-json" in capsys.readouterr().err


def test_train_device_accepts_cuda_n_and_names_bad_devices(monkeypatch):
    args = build_parser().parse_args(["train", "tracker", "--device", "cuda:1", "--config", "c.yaml"])
    assert args.device == "cuda:1"
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        distributed.setup("gpu")
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert distributed._device(0, "cuda:1") == torch.device("cuda", 1) and chosen == [1]
    assert distributed._device(1, "cuda", world_size=2) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="only 2 CUDA device"):
        distributed._device(0, "cuda:2")
    with pytest.raises(ConfigError, match="under torchrun"):
        distributed._device(0, "cuda:1", world_size=2)


# ------------------------------------------------------------------------ track ids and results
def test_best_per_track_and_select_entries():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.4, 0.2])
    ids = torch.tensor([3, 5, 3, 8, 5])
    assert best_per_track(scores, ids) == [0, 1, 3]
    assert select_entries(scores, ids) == [0, 1, 2, 3, 4]
    assert select_entries(scores, ids, 0.5) == [0, 1, 2]
    assert select_entries(scores, ids, 0.5, one_class_per_track=True) == [0, 1]
    unsorted = torch.tensor([0.2, 0.6, 0.9])
    assert best_per_track(unsorted, torch.tensor([1, 1, 2])) == [2, 1]


def test_tracked_instances_one_class_per_track():
    rles = [[{"size": [2, 2], "counts": str(n)}] for n in range(4)]
    instances = TrackedInstances(torch.tensor([0.9, 0.6, 0.5, 0.3]), torch.tensor([0, 1, 2, 0]),
                                 torch.tensor([4, 7, 4, 7]), rles, (2, 2), 1)
    one = instances.one_class_per_track()
    assert one.ids.tolist() == [4, 7] and one.labels.tolist() == [0, 1] and one.rles == [rles[0], rles[1]]
    assert len(instances.to_ytvis(1)) == 4 and len(one.to_ytvis(1)) == 2


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "clip"
    write_frame_folder(folder, random_frames(4))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", num_classes=6)


def run_segment(clip, model_dir, out, *extra) -> list[dict]:
    extra = extra if "--max-num" in extra else ("--max-num", "12", *extra)  # the tiny model keeps 3
    assert main(["segment", str(clip), "--model", str(model_dir), "--mode", "online", "--out", str(out),
                 "--no-render", "--no-progress", *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_segment_results_options(tmp_path, clip, model_dir):
    default = run_segment(clip, model_dir, tmp_path / "a")
    tracks = [r["track_id"] for r in default]
    assert len(tracks) > len(set(tracks)), "the test needs a track with two classes"
    one = run_segment(clip, model_dir, tmp_path / "b", "--one-class-per-track")
    assert len({r["track_id"] for r in one}) == len(one) == len(set(tracks))
    best = {}
    for r in default:
        if r["track_id"] not in best or r["score"] > best[r["track_id"]]["score"]:
            best[r["track_id"]] = r
    assert {(r["track_id"], r["category_id"], r["score"]) for r in one} == \
        {(r["track_id"], r["category_id"], r["score"]) for r in best.values()}
    threshold = sorted(r["score"] for r in default)[len(default) // 2]
    high = run_segment(clip, model_dir, tmp_path / "c", "--score-threshold", str(threshold))
    assert high == [r for r in default if r["score"] >= threshold] and 0 < len(high) < len(default)
    assert len(run_segment(clip, model_dir, tmp_path / "d", "--max-num", "2")) == 2
    assert main(["segment", str(clip), "--model", str(model_dir), "--out", str(tmp_path / "e"), "--max-num", "0"]) == 2


def test_predictor_one_class_per_track_and_score_threshold(clip, model_dir):
    predictor = VideoPredictor.from_pretrained(model_dir, device="cpu", mode="online")
    full = predictor(clip, max_num=12)
    one = predictor(clip, one_class_per_track=True, score_threshold=0.1, max_num=12)
    expected = full.one_class_per_track()
    keep = [n for n in range(len(expected.scores)) if expected.scores[n] >= 0.1]
    assert one.ids.tolist() == expected.ids[keep].tolist() and one.labels.tolist() == expected.labels[keep].tolist()
    assert one.rles == [expected.rles[n] for n in keep]


def test_segment_shows_both_passes_and_a_summary(tmp_path, clip, model_dir, capsys):
    assert main(["segment", str(clip), "--model", str(model_dir), "--mode", "online",
                 "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "[1/1] clip 1/2 segment" in err and "[1/1] clip 2/2 outputs + overlay" in err
    summary = re.search(r"segmented 1 video\(s\), 4 frames in (\S+) s, (\S+) frames/s", err)
    assert summary and float(summary.group(1)) > 0 and float(summary.group(2)) > 0
    assert main(["segment", str(clip), "--model", str(model_dir), "--mode", "online", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "1/2 segment" not in err and "segmented 0 video(s) (1 already done), 0 frames" in err


def test_vps_without_thing_classes_warns(tmp_path, clip, capsys):
    model = tiny_model(6)
    model.config.inference = dataclasses.replace(model.config.inference, thing_classes=())
    save_pretrained(model, tmp_path / "stuff_only")
    assert main(["segment", str(clip), "--model", str(tmp_path / "stuff_only"), "--mode", "online", "--task", "vps",
                 "--out", str(tmp_path / "o"), "--no-render", "--no-progress"]) == 0
    assert "warning: task vps with a model that has no thing classes" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="all objects of a class merge into one segment"):
        VideoPredictor(model)(random_frames(2), task="vps", mode="online")
    with_things = tiny_model(6)
    assert main(["segment", str(clip), "--model", str(save_tiny_model(tmp_path / "things")), "--mode", "online",
                 "--task", "vps", "--out", str(tmp_path / "o2"), "--no-render", "--no-progress"]) == 0
    assert "no thing classes" not in capsys.readouterr().err and with_things.config.inference.thing_classes


def test_a_closed_pipe_ends_quietly():
    """`dvis models | head -1`: no BrokenPipeError traceback once the reader has gone (here the
    reader is gone before the first write, so every write meets a closed pipe)."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "dvis", "models"], stdout=write_end, stderr=subprocess.PIPE,
                              timeout=120)
    finally:
        os.close(write_end)
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell reports a program stopped by a closed pipe
