"""Overlay rendering: masks blended over the frame in one stable colour per track id, with an
outline and a label (``id class score``) placed on the object.

Label placement (:func:`place_labels`): each label is centred on its mask's largest connected
component (at the component's centroid, or the component pixel nearest to it when the centroid
falls outside, e.g. for a ring), kept inside the frame, and moved to the nearest free spot when it
would cover a label already placed (labels are placed in the order given: the caller passes the
best-scoring tracks first). A label that finds no free spot is left out rather than drawn over
another. Text size, outline width and label padding scale with the frame's short side.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from dvis.data.prefetch import BackgroundWorker
from dvis.inference.results import select_entries

ALPHA = 0.5
REFERENCE_SIDE = 360  # short side at which text is TEXT_SIZE px and outlines 1 px
TEXT_SIZE = 11
MIN_TEXT_SIZE = 9


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright RGB colour that depends only on ``track_id`` (golden-ratio hue steps)."""
    hue = (0.13 + 0.618033988749895 * int(track_id)) % 1.0
    saturation = 0.85 if int(track_id) % 2 == 0 else 0.65
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass(frozen=True)
class Style:
    """Sizes for one frame size: text height (px), outline width (px), padding around text (px)."""

    text_size: int
    outline: int
    padding: int

    @classmethod
    def for_frame(cls, height: int, width: int) -> "Style":
        scale = min(height, width) / REFERENCE_SIDE
        return cls(text_size=max(MIN_TEXT_SIZE, round(TEXT_SIZE * scale)), outline=max(1, round(scale)),
                   padding=max(1, round(2 * scale)))


@lru_cache(maxsize=16)
def label_font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px (its fixed-size bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def label_anchor(mask: np.ndarray) -> tuple[float, float] | None:
    """(x, y) where a mask's label goes: the centroid of its largest connected component, or the
    component pixel nearest to the centroid when that falls outside it; None for an empty mask."""
    components, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(components.ravel())[1:]
    largest = components == (int(sizes.argmax()) + 1)
    ys, xs = np.nonzero(largest)
    cy, cx = ys.mean(), xs.mean()
    if largest[int(round(cy)), int(round(cx))]:
        return float(cx), float(cy)
    nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return float(xs[nearest]), float(ys[nearest])


Box = tuple[int, int, int, int]  # left, top, right, bottom (right/bottom exclusive)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _clamp(left: int, top: int, width: int, height: int, frame: tuple[int, int]) -> Box:
    left = min(max(left, 0), max(frame[1] - width, 0))
    top = min(max(top, 0), max(frame[0] - height, 0))
    return left, top, left + width, top + height


def place_labels(anchors: list[tuple[float, float] | None], sizes: list[tuple[int, int]],
                 frame: tuple[int, int]) -> list[Box | None]:
    """One box per label: centred on its anchor, inside ``frame`` (H, W), not overlapping earlier
    boxes. Tries the anchor, then positions stepped away from it by one label height / width in
    growing rings (nearest first); None where the anchor is None, the label is larger than the frame,
    or no free position exists."""
    placed: list[Box] = []
    out: list[Box | None] = []
    for anchor, (width, height) in zip(anchors, sizes):
        box = None
        if anchor is not None and width <= frame[1] and height <= frame[0]:
            box = _free_spot(anchor, width, height, frame, placed)
        if box is not None:
            placed.append(box)
        out.append(box)
    return out


def _free_spot(anchor: tuple[float, float], width: int, height: int, frame: tuple[int, int],
               placed: list[Box]) -> Box | None:
    left0, top0 = round(anchor[0] - width / 2), round(anchor[1] - height / 2)
    rings = max(frame[0] // max(height, 1), frame[1] // max(width, 1)) + 1
    seen: set[Box] = set()
    for ring in range(rings + 1):
        steps = [(dx, dy) for dy in range(-ring, ring + 1) for dx in range(-ring, ring + 1)
                 if max(abs(dx), abs(dy)) == ring]
        steps.sort(key=lambda s: (abs(s[1]) + abs(s[0]), abs(s[0])))  # vertical moves first
        for dx, dy in steps:
            box = _clamp(left0 + dx * width, top0 + dy * height, width, height, frame)
            if box in seen:
                continue
            seen.add(box)
            if not any(_overlaps(box, other) for other in placed):
                return box
    return None


def outline(mask: np.ndarray, width: int) -> np.ndarray:
    """(H, W) bool: the mask's pixels within ``width`` px of its border (inside the mask)."""
    if not mask.any():
        return np.zeros_like(mask)
    eroded = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~eroded


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luma >= 128 else (255, 255, 255)


def render_frame(frame: np.ndarray, masks: np.ndarray, colours: list[tuple[int, int, int]],
                 texts: list[str], outlines: bool = True) -> np.ndarray:
    """frame (H, W, 3) uint8, masks (n, H, W) bool -> overlaid frame (H, W, 3) uint8.

    Each mask is blended with its colour and outlined in it; its text (if any) is drawn on a box of
    that colour at the object (:func:`place_labels`). Pass the most important masks first: their
    labels are placed first.
    """
    height, width = frame.shape[:2]
    style = Style.for_frame(height, width)
    out = frame.astype(np.float32)
    for mask, colour in zip(masks, colours):
        out[mask] = out[mask] * (1 - ALPHA) + np.asarray(colour, np.float32) * ALPHA
    if outlines:
        for mask, colour in zip(masks, colours):
            out[outline(mask, style.outline)] = colour
    image = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    _draw_labels(image, masks, colours, texts, style)
    return np.asarray(image)


def _layout(masks, texts, style: Style, frame) -> tuple[list[Box | None], list[tuple[int, int]]]:
    font = label_font(style.text_size)
    offsets, sizes, anchors = [], [], []
    for mask, text in zip(masks, texts):
        left, top, right, bottom = font.getbbox(text) if text else (0, 0, 0, 0)
        offsets.append((left, top))
        sizes.append((right - left + 2 * style.padding, bottom - top + 2 * style.padding))
        anchors.append(label_anchor(mask) if text else None)
    return place_labels(anchors, sizes, frame), offsets


def _draw_labels(image: Image.Image, masks, colours, texts, style: Style) -> None:
    frame = (image.height, image.width)
    boxes, offsets = _layout(masks, texts, style, frame)
    draw = ImageDraw.Draw(image)
    font = label_font(style.text_size)
    for box, (left, top), colour, text in zip(boxes, offsets, colours, texts):
        if box is None:
            continue
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=tuple(colour))
        origin = (box[0] + style.padding - left, box[1] + style.padding - top)
        draw.text(origin, text, fill=text_colour(colour), font=font)


def vis_overlay_entries(scores, labels, ids, names, threshold: float) -> tuple[list[int], list, list[str]]:
    """What a VIS overlay draws of a video's entries (scores, labels, ids (N,) tensors): per track its
    best-scoring entry with score >= ``threshold``; returns (entry indices, colours, ``id class score``)."""
    shown = select_entries(scores, ids, threshold, one_class_per_track=True)
    colours = [track_colour(int(ids[n])) for n in shown]
    texts = [f"{int(ids[n])} {names[int(labels[n])]} {float(scores[n]):.2f}" for n in shown]
    return shown, colours, texts


OVERLAY_QUEUE = 8  # frames waiting for the overlay's worker thread (their masks are kept until drawn)


class OverlayVideo:
    """``OUT/<video>.mp4``, written frame by frame while the outputs are produced.

    The source frames are read a second time (a second decode) and written with the masks of each
    frame rendered on them, at the source frame rate. Disabled (``enabled=False``) it writes nothing.
    Decoding, drawing and encoding run in a background thread (:class:`~dvis.data.prefetch.
    BackgroundWorker`, up to ``queue_depth`` frames queued) so that the model computing the next
    frames' masks does not wait for them; ``queue_depth=0`` does them in the caller's thread.
    ``on_frame(1)`` (e.g. a progress bar's ``update``) is called once per frame when it is written
    (at once when disabled), so progress counts frames done, not frames queued.
    """

    def __init__(self, path, source, enabled: bool, queue_depth: int = OVERLAY_QUEUE,
                 on_frame: Callable[[int], object] | None = None) -> None:
        self.path, self.source, self.enabled, self.queue_depth = path, source, enabled, queue_depth
        self.on_frame = on_frame or (lambda n: None)
        self._writer = self._frames = self._worker = None

    def __enter__(self) -> "OverlayVideo":
        if self.enabled:
            from dvis.data.writer import VideoWriter

            self._frames = iter(self.source)
            self._writer = VideoWriter(self.path, self.source.fps).__enter__()
            self._worker = BackgroundWorker(self._write, self.queue_depth, name="dvis-overlay")
        return self

    def add(self, masks: np.ndarray | None, colours: list, texts: list[str]) -> None:
        """The next frame with ``masks`` (n, H, W) bool drawn on it (None or n = 0: the frame as is).
        ``masks`` must not be changed afterwards (it is drawn later, in the worker thread)."""
        if self.enabled:
            self._worker.submit(masks, colours, texts)
        else:
            self.on_frame(1)

    def _write(self, masks: np.ndarray | None, colours: list, texts: list[str]) -> None:
        frame = next(self._frames)
        if masks is None or len(masks) == 0:
            self._writer.write(frame)
        else:
            self._writer.write(render_frame(frame, masks, colours, texts))
        self.on_frame(1)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is None:
            return
        try:
            self._worker.close(cancel=exc_type is not None)
        except BaseException as error:  # the worker failed (e.g. disk full): no half-written mp4
            self._writer.__exit__(type(error), error, error.__traceback__)
            raise
        self._writer.__exit__(exc_type, exc, tb)
