"""Overlay rendering: masks blended over the frame in one stable colour per track id, with labels."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ALPHA = 0.5


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright RGB colour that depends only on ``track_id`` (golden-ratio hue steps)."""
    hue = (0.13 + 0.618033988749895 * int(track_id)) % 1.0
    saturation = 0.85 if int(track_id) % 2 == 0 else 0.65
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def render_frame(frame: np.ndarray, masks: np.ndarray, colours: list[tuple[int, int, int]],
                 texts: list[str]) -> np.ndarray:
    """frame (H, W, 3) uint8, masks (n, H, W) bool -> overlaid frame (H, W, 3) uint8.

    Each mask is blended with its colour; its text is drawn at the top-left of its bounding box.
    """
    out = frame.astype(np.float32)
    for mask, colour in zip(masks, colours):
        out[mask] = out[mask] * (1 - ALPHA) + np.asarray(colour, np.float32) * ALPHA
    image = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for mask, colour, text in zip(masks, colours, texts):
        ys, xs = np.nonzero(mask)
        if len(ys) == 0 or not text:
            continue
        x, y = int(xs.min()), int(ys.min())
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)
        draw.text((x, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(image)


class OverlayVideo:
    """``OUT/<video>.mp4``, written frame by frame while the outputs are produced.

    The source frames are read a second time (a second decode) and written with the masks of each
    frame rendered on them, at the source frame rate. Disabled (``enabled=False``) it writes nothing.
    """

    def __init__(self, path, source, enabled: bool) -> None:
        self.path, self.source, self.enabled = path, source, enabled
        self._writer = self._frames = None

    def __enter__(self) -> "OverlayVideo":
        if self.enabled:
            from dvis.data.writer import VideoWriter

            self._frames = iter(self.source)
            self._writer = VideoWriter(self.path, self.source.fps).__enter__()
        return self

    def add(self, masks: np.ndarray | None, colours: list, texts: list[str]) -> None:
        """The next frame with ``masks`` (n, H, W) bool drawn on it (None or n = 0: the frame as is)."""
        if not self.enabled:
            return
        frame = next(self._frames)
        if masks is None or len(masks) == 0:
            self._writer.write(frame)
        else:
            self._writer.write(render_frame(frame, masks, colours, texts))

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self._writer.__exit__(exc_type, exc, tb)
