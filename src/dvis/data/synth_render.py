"""Vectorised rendering of synthetic frames: a static textured background of stuff regions and
textured shapes painted back to front. Each object is evaluated only inside its bounding window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dvis.data.synth_scene import BackgroundSpec, ObjectSpec, SceneSpec
from dvis.data.synth_shapes import PALETTE, SHAPES, texture_pattern


@dataclass
class RenderedFrame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    labels: np.ndarray  # (H, W) int16: 1 + index of the visible object, 0 = background
    amodal_areas: np.ndarray  # (N,) int64: full in-frame area of each object (occluders ignored)


def _stuff_colour(name: str, rows: np.ndarray, cols: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 texture of one stuff class over the whole image."""
    height = rows.shape[0]
    if name == "sky":
        fade = (rows / max(height - 1, 1))[..., None]
        base = np.array([100, 150, 225], np.float32) * (1 - fade) + np.array([190, 215, 245], np.float32) * fade
        return base + 6 * noise[..., None]
    if name == "wall":
        course = (rows // 6).astype(np.int64)
        shifted = cols + 6 * (course % 2)
        mortar = (rows % 6 == 0) | (shifted % 12 == 0)
        brick = np.where(mortar[..., None], [200, 195, 185], [150, 95, 75]).astype(np.float32)
        return brick + 12 * noise[..., None]
    if name == "ground":
        return np.array([110, 90, 55], np.float32) + 30 * noise[..., None]
    if name == "water":
        ripple = np.sin(rows * 0.9 + 0.3 * np.sin(cols * 0.2))[..., None]
        return np.array([40, 95, 160], np.float32) + 18 * ripple + 6 * noise[..., None]
    if name == "road":
        return np.array([95, 95, 100], np.float32) + 14 * noise[..., None]
    raise ValueError(f"unknown stuff class {name!r}")


def render_background(spec: BackgroundSpec, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns the background image (H, W, 3) uint8 and the stuff region map (H, W) int8
    (0 = top region, 1 = bottom region, 2 = band)."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = np.random.default_rng(spec.seed).uniform(-1, 1, size=(height, width)).astype(np.float32)
    horizon = height * spec.horizon + height * spec.wave_amp * np.sin(cols[0] * spec.wave_freq + spec.wave_phase)
    regions = (rows >= horizon[None, :]).astype(np.int8)
    if spec.band is not None:
        top, bottom = spec.band_rows
        regions[(rows >= top * height) & (rows < bottom * height) & (regions == 1)] = 2
    names = [spec.top, spec.bottom, spec.band]
    image = np.zeros((height, width, 3), np.float32)
    for index, name in enumerate(names):
        if name is not None:
            inside = regions == index
            image[inside] = _stuff_colour(name, rows, cols, noise)[inside]
    return np.clip(image, 0, 255).astype(np.uint8), regions


class FrameRenderer:
    """Renders the frames of one scene; keeps the background and pixel grids between frames."""

    def __init__(self, scene: SceneSpec):
        self.scene = scene
        self.background, self.regions = render_background(scene.background, scene.height, scene.width)
        self.rows, self.cols = np.mgrid[0 : scene.height, 0 : scene.width].astype(np.float32)
        shades = PALETTE.astype(np.float32)
        self.light = shades.astype(np.uint8)
        self.dark = (shades * 0.55).astype(np.uint8)

    def render(self, t: int) -> RenderedFrame:
        scene = self.scene
        image = self.background.copy()
        labels = np.zeros((scene.height, scene.width), np.int16)
        amodal = np.zeros(len(scene.objects), np.int64)
        for index, obj in enumerate(scene.objects):
            amodal[index] = self._paint(obj, t, image, labels, index + 1)
        return RenderedFrame(image, labels, amodal)

    def _paint(self, obj: ObjectSpec, t: int, image: np.ndarray, labels: np.ndarray, label: int) -> int:
        """Draws one object over `image`/`labels` in place; returns its in-frame amodal area."""
        cx, cy = obj.centre(t)
        reach = obj.radius * 1.02 + 1
        y0, y1 = max(0, int(cy - reach)), min(self.scene.height, int(cy + reach) + 2)
        x0, x1 = max(0, int(cx - reach)), min(self.scene.width, int(cx + reach) + 2)
        if y0 >= y1 or x0 >= x1:
            return 0
        dx = self.cols[y0:y1, x0:x1] - np.float32(cx)
        dy = self.rows[y0:y1, x0:x1] - np.float32(cy)
        cos, sin = np.float32(np.cos(obj.angle(t))), np.float32(np.sin(obj.angle(t)))
        u = dx * cos + dy * sin
        v = dy * cos - dx * sin
        mask = SHAPES_BY_ID[obj.category_id](u, v, obj.radius)
        area = int(np.count_nonzero(mask))
        if area == 0:
            return 0
        pattern = texture_pattern(obj.texture, u, v, obj.period)
        window = image[y0:y1, x0:x1]
        if pattern is None:
            window[mask] = self.light[obj.colour]
        else:
            colours = np.where(pattern[..., None], self.light[obj.colour], self.dark[obj.colour])
            window[mask] = colours[mask]
        labels[y0:y1, x0:x1][mask] = label
        return area


SHAPES_BY_ID = {index + 1: fn for index, fn in enumerate(SHAPES.values())}
