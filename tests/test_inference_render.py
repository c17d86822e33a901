"""Overlay rendering: track colours, blended masks with labels, and the overlay video of ``dvis segment``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from pycocotools import mask as mask_api

from dvis.cli import main
from dvis.data.video import open_video
from scipy import ndimage

from dvis.inference import render
from dvis.inference.render import ALPHA, Style, label_anchor, outline, render_frame, track_colour

from inference_helpers import save_tiny_model, write_video


def label_boxes(masks, texts, frame):
    """Where render_frame draws each label (None: not drawn), for masks (n, H, W)."""
    return render._layout(masks, texts, Style.for_frame(*frame), frame)[0]


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
    out = render_frame(frame, masks, colours, ["", ""], outlines=False)
    for mask, colour in zip(masks, colours):
        expected = (100 * (1 - ALPHA) + np.asarray(colour) * ALPHA).astype(np.uint8)
        assert (out[mask] == expected).all()
    assert (out[~masks.any(0)] == 100).all()  # nothing else changes
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert (frame == 100).all()  # the input frame is left as it was


def test_render_frame_draws_the_label_on_the_object_in_its_colour():
    frame = blank(60, 120)
    masks = np.zeros((1, 60, 120), bool)
    masks[0, 20:50, 30:110] = True
    colour = (0, 255, 0)
    plain = render_frame(frame, masks, [colour], [""])
    labelled = render_frame(frame, masks, [colour], ["3 person 0.93"])
    changed = (labelled != plain).any(-1)
    ys, xs = np.nonzero(changed)
    assert changed.any() and masks[0][changed].all()  # the label lies on the object
    assert abs((ys.min() + ys.max()) / 2 - 34.5) <= 2 and abs((xs.min() + xs.max()) / 2 - 69.5) <= 2  # centred
    assert ys.max() - ys.min() < 20 and xs.max() - xs.min() > 40  # one text line, several characters wide
    box = labelled[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert (box == colour).all(-1).any()  # box filled with the track colour
    assert (box.astype(int).sum(-1) < 60).any()  # dark text on the light green box
    assert (labelled[~changed] == plain[~changed]).all()
    [box_drawn] = label_boxes(masks, ["3 person 0.93"], (60, 120))
    assert changed[box_drawn[1]:box_drawn[3], box_drawn[0]:box_drawn[2]].mean() > 0.9


def test_label_goes_to_the_largest_component_not_the_bounding_box():
    """Two pieces of one mask far apart: the bounding box's corner and centre are on neither."""
    masks = np.zeros((1, 120, 160), bool)
    masks[0, 5:15, 5:15] = True  # small piece, top left
    masks[0, 70:115, 100:155] = True  # large piece, bottom right
    assert label_anchor(masks[0]) == pytest.approx((127.0, 92.0))
    [box] = label_boxes(masks, ["7 cat 0.80"], (120, 160))
    assert box[0] >= 90 and box[1] >= 60  # on the large piece


def test_label_anchor_of_a_ring_is_on_the_ring():
    ys, xs = np.mgrid[0:80, 0:80]
    radius = np.hypot(ys - 40, xs - 40)
    ring = (radius > 25) & (radius < 32)
    x, y = label_anchor(ring)
    assert ring[int(y), int(x)]


def inside(box, height, width) -> bool:
    return 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("corner", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_labels_at_the_frame_edges_stay_inside_the_frame(corner):
    height, width = 64, 128
    masks = np.zeros((1, height, width), bool)
    rows = slice(0, 4) if corner[0] == 0 else slice(height - 4, height)
    cols = slice(0, 4) if corner[1] == 0 else slice(width - 4, width)
    masks[0, rows, cols] = True
    text = "12 motorcycle 0.99"
    [box] = label_boxes(masks, [text], (height, width))
    assert box is not None and inside(box, height, width)
    out = render_frame(blank(height, width), masks, [(255, 0, 0)], [text])
    plain = render_frame(blank(height, width), masks, [(255, 0, 0)], [""])
    ys, xs = np.nonzero((out != plain).any(-1))
    assert ys.min() >= box[1] and ys.max() < box[3] and xs.min() >= box[0] and xs.max() < box[2]


def test_labels_of_overlapping_objects_do_not_overlap():
    height, width = 120, 160
    masks = np.zeros((8, height, width), bool)
    for n in range(8):  # eight objects crowded around the centre
        masks[n, 50 + n % 3:70 + n % 3, 70 + n:90 + n] = True
    texts = [f"{n} person 0.{90 - n}" for n in range(8)]
    boxes = label_boxes(masks, texts, (height, width))
    assert all(box is not None and inside(box, height, width) for box in boxes)
    assert not any(overlap(a, b) for a, b in itertools.combinations(boxes, 2))
    assert boxes[0][0] <= 80 <= boxes[0][2] and boxes[0][1] <= 61 <= boxes[0][3]  # the first stays on its object


def test_a_label_without_room_is_left_out_not_drawn_over_another():
    masks = np.ones((3, 12, 40), bool)
    boxes = label_boxes(masks, ["1 a", "2 b", "3 c"], (12, 40))
    assert boxes[0] is not None and sum(box is None for box in boxes) >= 1
    drawn = [box for box in boxes if box is not None]
    assert not any(overlap(a, b) for a, b in itertools.combinations(drawn, 2))


def test_outline_is_drawn_on_the_mask_border_in_the_track_colour():
    frame = blank(90, 120)
    masks = np.zeros((1, 90, 120), bool)
    masks[0, 20:70, 30:100] = True
    colour = (255, 0, 255)
    out = render_frame(frame, masks, [colour], [""])
    border = masks[0] & ~ndimage.binary_erosion(masks[0])
    assert border.sum() == 2 * (50 + 70) - 4
    assert (out[border] == colour).all()  # full colour on the border
    interior = ndimage.binary_erosion(masks[0], iterations=2)
    blended = (100 * (1 - ALPHA) + np.asarray(colour) * ALPHA).astype(np.uint8)
    assert (out[interior] == blended).all()  # blended inside
    assert (out[~masks[0]] == 100).all()  # the outline stays on the mask
    assert (outline(masks[0], 1) == border).all()


def test_text_and_outline_scale_with_the_resolution():
    small, large = Style.for_frame(128, 128), Style.for_frame(1080, 1920)
    assert large.text_size >= 3 * small.text_size - 3 and large.outline == 3 and small.outline == 1
    masks_small = np.zeros((1, 128, 128), bool)
    masks_small[0, 30:90, 30:90] = True
    masks_large = np.zeros((1, 1080, 1920), bool)
    masks_large[0, 300:800, 600:1400] = True
    [a] = label_boxes(masks_small, ["5 dog 0.91"], (128, 128))
    [b] = label_boxes(masks_large, ["5 dog 0.91"], (1080, 1920))
    assert (b[3] - b[1]) > 2.5 * (a[3] - a[1])


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
    """What dvis segment draws at --render-threshold 0: per track its best-scoring entry, labelled
    ``id class score``."""
    best: dict[int, dict] = {}
    for entry in entries:  # results.json keeps the descending score order
        best.setdefault(entry["track_id"], entry)
    shown = [e for e in entries if best[e["track_id"]] is e]
    masks = np.stack([mask_api.decode(e["segmentations"][t]).astype(bool) for e in shown])
    texts = [f"{e['track_id']} class {e['category_id']} {e['score']:.2f}" for e in shown]
    return render_frame(frame, masks, [track_colour(e["track_id"]) for e in shown], texts)


def test_overlay_video_has_the_source_frames_fps_and_masks(tmp_path, model_dir):
    frames = smooth_frames(9, 96, 128)
    write_video(tmp_path / "walk.mp4", frames, fps=7)
    source = list(open_video(tmp_path / "walk.mp4"))  # as decoded (the overlay is drawn on these)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "walk.mp4"), "--model", str(model_dir), "--mode", "online",
                 "--out", str(out), "--render-threshold", "0", "--quiet"]) == 0
    overlay = open_video(out / "walk.mp4")
    assert overlay.fps == pytest.approx(7) and (overlay.width, overlay.height) == (128, 96)
    rendered = list(overlay)
    assert len(rendered) == 9
    entries = json.loads((out / "results.json").read_text())
    for t in (0, 4, 8):
        expected = expected_overlay(source[t], entries, t).astype(int)
        drawn = np.abs(expected - source[t]).mean()
        assert drawn > 10, "the test needs visible masks"
        # thin outlines and text in full colour suffer from yuv420's halved chroma resolution
        assert np.abs(expected - rendered[t]).mean() < drawn / 3
