"""Overlay rendering: track colours, blended masks with labels, and the overlay video of ``dvis segment``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from pycocotools import mask as mask_api

from dvis.cli import main
from dvis.data.video import open_video
from dvis.inference.render import ALPHA, render_frame, track_colour
from inference_helpers import save_tiny_model, write_video


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", num_classes=6)


def distance(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def test_track_colour_is_stable_and_distinct_per_track():
    assert track_colour(7) == track_colour(7) == track_colour(np.int64(7))
    colours = [track_colour(track) for track in range(200)]  # 200 = most queries of a release model
    assert len(set(colours)) == 200
    assert all(isinstance(c, int) and 0 <= c <= 255 for colour in colours for c in colour)
    assert all(max(colour) >= 200 for colour in colours)  # bright enough to see on any frame
    near = [distance(colours[a], colours[b]) for a, b in itertools.combinations(range(200), 2) if b - a < 8]
    assert min(near) > 60  # tracks with close ids (often in one frame) look clearly different


def blank(height=40, width=60, value=100):
    return np.full((height, width, 3), value, np.uint8)


def test_render_frame_blends_each_mask_with_its_colour():
    frame = blank()
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 5:20, 5:25] = True
    masks[1, 25:38, 30:58] = True
    colours = [(255, 0, 0), (0, 0, 255)]
    out = render_frame(frame, masks, colours, ["", ""])
    for mask, colour in zip(masks, colours):
        expected = (100 * (1 - ALPHA) + np.asarray(colour) * ALPHA).astype(np.uint8)
        assert (out[mask] == expected).all()
    assert (out[~masks.any(0)] == 100).all()  # nothing else changes
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert (frame == 100).all()  # the input frame is left as it was


def test_render_frame_draws_the_label_at_the_mask_top_left():
    frame = blank(60, 120)
    masks = np.zeros((1, 60, 120), bool)
    masks[0, 20:50, 30:110] = True
    colour = (0, 255, 0)
    plain = render_frame(frame, masks, [colour], [""])
    labelled = render_frame(frame, masks, [colour], ["person 0.93"])
    changed = (labelled != plain).any(-1)
    ys, xs = np.nonzero(changed)
    assert changed.any() and ys.min() >= 19 and xs.min() >= 29  # the label box starts at the mask's corner
    assert ys.max() < 20 + 16 and xs.max() > 30 + 30  # one text line, several characters wide
    box = labelled[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert (box == colour).all(-1).any()  # box filled with the track colour
    assert (box.astype(int).sum(-1) < 40).any()  # dark (anti-aliased black) text on it
    assert (labelled[~changed] == plain[~changed]).all()


def test_render_frame_without_pixels_draws_no_label():
    masks = np.zeros((1, 40, 60), bool)
    out = render_frame(blank(), masks, [(255, 0, 0)], ["car 0.5"])
    assert (out == 100).all()


def smooth_frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Slowly changing gradients: little codec error, so the overlay can be compared to a render."""
    ys, xs = np.mgrid[0:height, 0:width]
    return [np.stack([(xs * 3 + t * 5) % 256, (ys * 4) % 256, np.full_like(xs, 90 + t)], -1).astype(np.uint8)
            for t in range(count)]


def expected_overlay(frame: np.ndarray, entries: list[dict], t: int) -> np.ndarray:
    """What dvis segment draws at --render-threshold 0: per track its best-scoring entry."""
    best: dict[int, dict] = {}
    for entry in entries:  # results.json keeps the descending score order
        best.setdefault(entry["track_id"], entry)
    shown = [e for e in entries if best[e["track_id"]] is e]
    masks = np.stack([mask_api.decode(e["segmentations"][t]).astype(bool) for e in shown])
    texts = [f"class {e['category_id']} {e['score']:.2f}" for e in shown]
    return render_frame(frame, masks, [track_colour(e["track_id"]) for e in shown], texts)


def test_overlay_video_has_the_source_frames_fps_and_masks(tmp_path, model_dir):
    frames = smooth_frames(9)
    write_video(tmp_path / "walk.mp4", frames, fps=7)
    source = list(open_video(tmp_path / "walk.mp4"))  # as decoded (the overlay is drawn on these)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "walk.mp4"), "--model", str(model_dir), "--mode", "online",
                 "--out", str(out), "--render-threshold", "0", "--quiet"]) == 0
    overlay = open_video(out / "walk.mp4")
    assert overlay.fps == pytest.approx(7) and (overlay.width, overlay.height) == (64, 48)
    rendered = list(overlay)
    assert len(rendered) == 9
    entries = json.loads((out / "results.json").read_text())
    for t in (0, 4, 8):
        expected = expected_overlay(source[t], entries, t).astype(int)
        drawn = np.abs(expected - source[t]).mean()
        assert drawn > 10, "the test needs visible masks"
        assert np.abs(expected - rendered[t]).mean() < drawn / 4
