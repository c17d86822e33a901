"""COCO category id -> video dataset category id, the release's maps for turning COCO images into
pseudo videos of a video set's classes (``COCO_TO_YTVIS_2019``, ``COCO_TO_YTVIS_2021`` and
``COCO_TO_OVIS`` in the release's ``dvis/data_video/datasets/ytvis.py``).

COCO classes missing from a map have no counterpart in that video set: their objects are dropped.
Several COCO classes may share one video class (ytvis19: bicycle 2 and motorcycle 4 -> motorbike 21;
ovis: car 3, bus 6 and truck 8 -> vehicle 25).
"""

from __future__ import annotations

from typing import Any

from dvis.errors import ConfigError

COCO_TO_YTVIS_2019 = {
    1: 1, 2: 21, 3: 6, 4: 21, 5: 28, 7: 17, 8: 29, 9: 34, 17: 14, 18: 8, 19: 18, 21: 15, 22: 32, 23: 20, 24: 30,
    25: 22, 35: 33, 36: 33, 41: 5, 42: 27, 43: 40,
}
COCO_TO_YTVIS_2021 = {
    1: 26, 2: 23, 3: 5, 4: 23, 5: 1, 7: 36, 8: 37, 9: 4, 16: 3, 17: 6, 18: 9, 19: 19, 21: 7, 22: 12, 23: 2,
    24: 40, 25: 18, 34: 14, 35: 31, 36: 31, 41: 29, 42: 33, 43: 34,
}
COCO_TO_OVIS = {
    1: 1, 2: 21, 3: 25, 4: 22, 5: 23, 6: 25, 8: 25, 9: 24, 17: 3, 18: 4, 19: 5, 20: 6, 21: 7, 22: 8, 23: 9,
    24: 10, 25: 11,
}
COCO_CATEGORY_MAPS = {"ytvis19": COCO_TO_YTVIS_2019, "ytvis21": COCO_TO_YTVIS_2021, "ovis": COCO_TO_OVIS}


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_category_map(value: Any, key: str = "category_map") -> dict[int, int]:
    """A named map (``ytvis19``, ``ytvis21``, ``ovis``) or a ``{coco_id: video_id}`` mapping of
    integers -> a new dict. Anything else is a :class:`ConfigError` naming ``key``."""
    names = ", ".join(COCO_CATEGORY_MAPS)
    if isinstance(value, str):
        if value not in COCO_CATEGORY_MAPS:
            raise ConfigError(f"{key} = {value!r} is not a known mapping; known: {names} "
                              "(or give {coco_id: video_id})")
        return dict(COCO_CATEGORY_MAPS[value])
    if isinstance(value, dict) and value:
        bad = [(k, v) for k, v in value.items() if not (_is_id(k) and _is_id(v))]
        if not bad:
            return {int(k): int(v) for k, v in value.items()}
        raise ConfigError(f"{key}: entry {bad[0][0]!r}: {bad[0][1]!r} is not an integer pair coco_id: video_id")
    raise ConfigError(f"{key} = {value!r}: expected one of {names}, or a non-empty {{coco_id: video_id}} mapping")
