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
