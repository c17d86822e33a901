"""Occlusion level of a ground-truth object, for OVIS-style AP_light / AP_medium / AP_heavy.

Where the level comes from (per annotation of the YouTube-VIS/OVIS JSON):

1. ``occlusion_level``: one of ``"light"``, ``"medium"``, ``"heavy"`` (the synthetic benchmark
   and any custom set may write it directly);
2. otherwise ``occlusion``: the object's *mean occlusion ratio* (a number in [0, 1], or a
   per-frame list whose non-null entries are averaged). Bands as OVIS's MBOR:
   light < 0.25, medium 0.25 - 0.5 (both ends inclusive), heavy > 0.5;
3. neither field: the object has no level and is ignored in every split (it still counts in
   the ordinary AP).

How a split is scored (same mechanism as COCO's area ranges): within the split of level L,
ground truth of any other level (or without a level) is *ignored* - it can still absorb a
detection, and a detection matched to it is ignored too - while an unmatched detection counts
as a false positive in every split (detections carry no occlusion level, so unlike area
ranges an unmatched detection is never "out of range").
"""

from __future__ import annotations

import math
from typing import Any

from dvis.errors import DataError

LEVELS = ("light", "medium", "heavy")
LIGHT_BELOW = 0.25
HEAVY_ABOVE = 0.5


def level_from_ratio(ratio: float) -> str:
    """Mean occlusion ratio -> level (light < 0.25 <= medium <= 0.5 < heavy)."""
    if ratio < LIGHT_BELOW:
        return "light"
    if ratio > HEAVY_ABOVE:
        return "heavy"
    return "medium"


def _mean_ratio(value: Any, where: str) -> float | None:
    if isinstance(value, list):
        numbers = [v for v in value if v is not None]
        if not numbers:
            return None
        value = sum(_as_ratio(v, where) for v in numbers) / len(numbers)
    return _as_ratio(value, where)


def _as_ratio(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: field 'occlusion' must be a number in [0, 1] (or a list of them), "
                        f"got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise DataError(f"{where}: field 'occlusion' must lie in [0, 1], got {value}")
    return float(value)


def occlusion_level(ann: dict, where: str) -> str | None:
    """The annotation's occlusion level ("light"/"medium"/"heavy") or None when it has none."""
    level = ann.get("occlusion_level")
    if level is not None:
        if level not in LEVELS:
            raise DataError(f"{where}: field 'occlusion_level' must be one of {list(LEVELS)}, got {level!r}")
        return level
    ratio = ann.get("occlusion")
    if ratio is None:
        return None
    mean = _mean_ratio(ratio, where)
    return None if mean is None else level_from_ratio(mean)
