"""Random scene layout of one synthetic video: objects, their look and their trajectories.

Objects move along straight lines with a small sideways wiggle and spin. Each object passes a
*meeting point* at a *meeting time*; the occlusion level sets how close together those points and
times are and how large the objects are, which controls how much objects overlap on average.
The first two objects of every video with at least two objects are look-alikes (same class,
colour, texture and size) that cross each other at the same point and time, so that matching by
appearance alone cannot tell them apart after the crossing; further look-alikes occur at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dvis.data.synth_shapes import SHAPES, TEXTURES, class_colours

OCCLUSION_LEVELS = ("light", "medium", "heavy")


@dataclass(frozen=True)
class LevelParams:
    radius: tuple[float, float]  # object radius, fraction of min(H, W)
    spread: float  # meeting points: centre +- spread * size
    time_spread: float  # meeting times: centre +- time_spread * T
    speed: tuple[float, float]  # pixels per frame, fraction of min(H, W)


LEVEL_PARAMS = {
    "light": LevelParams(radius=(0.06, 0.10), spread=0.42, time_spread=0.5, speed=(0.006, 0.02)),
    "medium": LevelParams(radius=(0.11, 0.18), spread=0.16, time_spread=0.3, speed=(0.005, 0.016)),
    "heavy": LevelParams(radius=(0.14, 0.22), spread=0.08, time_spread=0.15, speed=(0.003, 0.01)),
}

CROSSER_FRACTION = 0.3  # share of objects that move 3x faster (they enter and leave)

# Stuff classes of the background (panoptic output). Ids follow the thing classes.
TOP_STUFF = ("sky", "wall")
BOTTOM_STUFF = ("ground", "water", "road")
STUFF_NAMES = TOP_STUFF + BOTTOM_STUFF


@dataclass(frozen=True)
class ObjectSpec:
    category_id: int  # 1-based thing class id (order of SHAPES)
    colour: int  # index into PALETTE
    texture: str
    radius: float  # pixels
    meet_xy: np.ndarray  # (2,) x, y where the object is at meet_t
    meet_t: float
    velocity: np.ndarray  # (2,) pixels per frame
    wiggle: float  # sideways amplitude in pixels
    wiggle_freq: float  # radians per frame
    wiggle_phase: float
    angle0: float  # radians
    spin: float  # radians per frame
    period: float  # texture period in pixels

    def centre(self, t: float) -> np.ndarray:
        """(2,) x, y centre at frame t."""
        speed = float(np.hypot(*self.velocity)) or 1.0
        side = np.array([-self.velocity[1], self.velocity[0]]) / speed
        sway = self.wiggle * np.sin(self.wiggle_freq * t + self.wiggle_phase)
        return self.meet_xy + self.velocity * (t - self.meet_t) + side * sway

    def angle(self, t: float) -> float:
        return self.angle0 + self.spin * t


@dataclass(frozen=True)
class BackgroundSpec:
    top: str  # stuff name above the horizon
    bottom: str  # stuff name below it
    band: str | None  # optional stuff band inside the bottom region
    horizon: float  # fraction of H
    wave_amp: float  # pixels
    wave_freq: float  # radians per pixel
    wave_phase: float
    band_rows: tuple[float, float]  # fractions of H, inside the bottom region
    seed: int  # noise texture seed


@dataclass(frozen=True)
class SceneSpec:
    height: int
    width: int
    frames: int
    objects: list[ObjectSpec]  # back to front: later objects are drawn over earlier ones
    background: BackgroundSpec


def _look(rng: np.random.Generator) -> tuple[int, int, str]:
    category_id = int(rng.integers(len(SHAPES))) + 1
    choices = class_colours(category_id)
    colour = choices[int(rng.integers(len(choices)))]
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    return category_id, colour, texture


def _direction(rng: np.random.Generator, base: float | None = None) -> np.ndarray:
    if base is None:
        angle = rng.uniform(0, 2 * np.pi)
    else:  # at least 60 degrees away from `base`, so that the pair crosses
        angle = base + rng.choice([-1, 1]) * rng.uniform(np.pi / 3, np.pi * 5 / 6)
    return np.array([np.cos(angle), np.sin(angle)])


def _sample_object(rng, look, params, size, frames, centre_xy, centre_t, meet=None, heading=None):
    category_id, colour, texture = look
    if meet is None:
        jitter = rng.uniform(-1, 1, size=2) * params.spread * np.array(size[::-1])
        meet_xy = np.clip(centre_xy + jitter, [0, 0], [size[1] - 1, size[0] - 1])
        meet_t = float(np.clip(centre_t + rng.uniform(-1, 1) * params.time_spread * frames, 0, frames - 1))
    else:
        meet_xy, meet_t = meet
    short = min(size)
    speed = rng.uniform(*params.speed) * short
    if rng.random() < CROSSER_FRACTION:  # a fast object that enters and leaves the frame
        speed *= 3.0
    direction = _direction(rng, heading)
    return ObjectSpec(
        category_id=category_id,
        colour=colour,
        texture=texture,
        radius=float(rng.uniform(*params.radius) * short),
        meet_xy=np.asarray(meet_xy, dtype=np.float64),
        meet_t=meet_t,
        velocity=direction * speed,
        wiggle=float(rng.uniform(0, 0.05) * short),
        wiggle_freq=float(rng.uniform(0.05, 0.3)),
        wiggle_phase=float(rng.uniform(0, 2 * np.pi)),
        angle0=float(rng.uniform(0, 2 * np.pi)),
        spin=float(rng.uniform(-0.08, 0.08)),
        period=float(rng.uniform(3.0, 6.0)),
    )


def _background(rng: np.random.Generator) -> BackgroundSpec:
    bottom = BOTTOM_STUFF[int(rng.integers(len(BOTTOM_STUFF)))]
    others = [name for name in BOTTOM_STUFF if name != bottom]
    band = others[int(rng.integers(len(others)))] if rng.random() < 0.5 else None
    horizon = float(rng.uniform(0.3, 0.55))
    band_top = float(rng.uniform(horizon + 0.1, 0.8))
    return BackgroundSpec(
        top=TOP_STUFF[int(rng.integers(len(TOP_STUFF)))],
        bottom=bottom,
        band=band,
        horizon=horizon,
        wave_amp=float(rng.uniform(0, 0.06)),
        wave_freq=float(rng.uniform(0.02, 0.12)),
        wave_phase=float(rng.uniform(0, 2 * np.pi)),
        band_rows=(band_top, min(band_top + float(rng.uniform(0.08, 0.18)), 0.98)),
        seed=int(rng.integers(2**31)),
    )


def sample_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    frames: int,
    objects: tuple[int, int],
    occlusion: str,
) -> SceneSpec:
    """Draw one video's layout. Objects are returned back to front (depth order)."""
    if occlusion not in LEVEL_PARAMS:
        raise ValueError(f"occlusion must be one of {OCCLUSION_LEVELS}, got {occlusion!r}")
    params = LEVEL_PARAMS[occlusion]
    size = (height, width)
    count = int(rng.integers(objects[0], objects[1] + 1))
    centre_xy = np.array([width, height], dtype=np.float64) * rng.uniform(0.35, 0.65, size=2)
    centre_t = (frames - 1) * float(rng.uniform(0.3, 0.7))
    specs: list[ObjectSpec] = []
    while len(specs) < count:
        if len(specs) == 1:  # the crossing look-alike of object 0
            first = specs[0]
            twin_look = (first.category_id, first.colour, first.texture)
            heading = float(np.arctan2(first.velocity[1], first.velocity[0]))
            twin = _sample_object(rng, twin_look, params, size, frames, centre_xy, centre_t,
                                  meet=(first.meet_xy, first.meet_t), heading=heading)
            specs.append(_same_size(twin, first.radius * rng.uniform(0.95, 1.05)))
            continue
        look = _look(rng)
        if specs and rng.random() < 0.25:  # another look-alike of a random earlier object
            other = specs[int(rng.integers(len(specs)))]
            look = (other.category_id, other.colour, other.texture)
        specs.append(_sample_object(rng, look, params, size, frames, centre_xy, centre_t))
    order = rng.permutation(len(specs))
    return SceneSpec(height, width, frames, [specs[i] for i in order], _background(rng))


def _same_size(spec: ObjectSpec, radius: float) -> ObjectSpec:
    from dataclasses import replace

    return replace(spec, radius=float(radius))
