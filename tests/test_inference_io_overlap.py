"""Decoding, drawing and encoding overlap the model (background threads) without changing anything
a run writes; ``--no-io-overlap`` / ``read_ahead=0`` take turns in the main thread."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from dvis.cli import main
from dvis.data.video import open_video
from dvis.inference import render
from dvis.inference.predictor import VideoPredictor
from dvis.modeling.io import load_pretrained

from inference_helpers import random_frames, save_tiny_model, write_video


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", num_classes=6)


def _segment(video, model_dir, out, *extra) -> dict:
    assert main(["segment", str(video), "--model", str(model_dir), "--mode", "offline", "--out", str(out),
                 "--quiet", *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_segment_writes_the_same_results_and_overlay_with_and_without_overlap(tmp_path, model_dir, monkeypatch):
    write_video(tmp_path / "walk.mp4", random_frames(9, height=32, width=48), fps=12)
    drawn_in: set[str] = set()
    original = render.render_frame

    def recording(*args, **kwargs):
        drawn_in.add(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(render, "render_frame", recording)
    threaded = _segment(tmp_path / "walk.mp4", model_dir, tmp_path / "a", "--render-threshold", "0")
    threads_used, drawn_in = set(drawn_in), set()
    inline = _segment(tmp_path / "walk.mp4", model_dir, tmp_path / "b", "--no-io-overlap", "--render-threshold", "0")
    inline_threads = set(drawn_in)
    assert threaded == inline and threaded
    overlays = [np.stack(list(open_video(tmp_path / name / "walk.mp4"))) for name in ("a", "b")]
    assert overlays[0].shape == (9, 32, 48, 3)
    assert threads_used == {"dvis-overlay"}  # every frame was drawn in the worker thread
    assert inline_threads == {threading.main_thread().name}


def test_predictor_decodes_ahead_in_a_thread_with_equal_results(tmp_path, model_dir):
    frames = random_frames(7, height=32, width=48)
    decoded_in: list[str] = []

    def video():
        for frame in frames:
            decoded_in.append(threading.current_thread().name)
            yield frame

    model = load_pretrained(model_dir)
    ahead = VideoPredictor(model, mode="offline", window_size=3)(video())
    assert set(decoded_in) == {"dvis-decode"}
    decoded_in.clear()
    inline = VideoPredictor(model, mode="offline", window_size=3, read_ahead=0)(video())
    assert set(decoded_in) == {threading.main_thread().name}
    assert ahead.ids.tolist() == inline.ids.tolist() and np.allclose(ahead.scores, inline.scores)
    assert ahead.rles == inline.rles


def test_a_decoding_error_reaches_the_caller(tmp_path, model_dir):
    def broken():
        yield random_frames(1, height=32, width=48)[0]
        raise OSError("frame 1 of broken.mp4 cannot be decoded")

    predictor = VideoPredictor(load_pretrained(model_dir), mode="online", window_size=1)
    with pytest.raises(OSError, match="frame 1 of broken.mp4"):
        predictor(broken())


@pytest.mark.parametrize("queue_depth, enabled", [(4, True), (0, True), (4, False)])
def test_overlay_progress_counts_frames_written_not_frames_queued(tmp_path, queue_depth, enabled):
    """The pass-2 bar advances as the overlay's thread writes a frame, so it reaches its total only
    when the mp4 is complete (a queued frame is not counted)."""
    write_video(tmp_path / "walk.mp4", random_frames(6, height=32, width=48), fps=12)
    source = open_video(tmp_path / "walk.mp4")
    gate, done, written = threading.Event(), [], []
    original = render.render_frame

    def slow(*args, **kwargs):
        assert gate.wait(10), "the frames were not all queued"  # the first frame is held until every frame has been queued
        return original(*args, **kwargs)

    render_frame, render.render_frame = render.render_frame, slow
    try:
        with render.OverlayVideo(tmp_path / "out.mp4", source, enabled, queue_depth, done.append) as overlay:
            for _ in range(4):  # 1 held in the worker + 3 queued: fits the queue
                if queue_depth == 0 and enabled:
                    gate.set()  # drawn in this thread: nothing to hold
                overlay.add(np.ones((1, 32, 48), bool), [(255, 0, 0)], ["1 a"])
                written.append(len(done))
            if enabled and queue_depth:
                assert len(done) == 0  # all 4 handed over, none written yet
            gate.set()
    finally:
        render.render_frame = render_frame
    assert sum(done) == 4
    assert written == ([0] * 4 if enabled and queue_depth else [1, 2, 3, 4])
    assert (tmp_path / "out.mp4").is_file() == enabled
