"""Released (detectron2) config values -> :class:`dvis.modeling.dvis.DVISConfig`.

Accepts the flat dictionaries found with released checkpoints and goldens, in either spelling:
``{"TRACKER_DECODER_LAYERS": 6, "TEST_MAX_NUM": 20}`` or
``{"TRACKER.DECODER_LAYERS": 6, "MASK_FORMER.TEST.MAX_NUM": 20}``. Keys are normalised by replacing
dots with underscores and dropping the ``MODEL_``, ``MASK_FORMER_`` and ``SEM_SEG_HEAD_``
namespaces, so both resolve to ``TRACKER_DECODER_LAYERS`` / ``TEST_MAX_NUM``.
"""

from __future__ import annotations

from typing import Any

from dvis.errors import ConfigError
from dvis.modeling.dvis import DVISConfig, InferenceConfig
from dvis.modeling.refiner import RefinerConfig
from dvis.modeling.segmenter import SegmenterConfig
from dvis.modeling.tracker import TrackerConfig

_NAMESPACES = ("MODEL_", "MASK_FORMER_", "SEM_SEG_HEAD_", "INPUT_")


def normalise_key(key: str) -> str:
    key = key.split(" ")[0].replace(".", "_").upper()
    changed = True
    while changed:
        changed = False
        for prefix in _NAMESPACES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def normalise(values: dict[str, Any]) -> dict[str, Any]:
    return {normalise_key(k): v for k, v in values.items()}


def _get(values: dict[str, Any], key: str, default: Any = ConfigError) -> Any:
    if key in values:
        return values[key]
    if default is ConfigError:
        raise ConfigError(f"released config lacks {key!r} (have: {', '.join(sorted(values))})")
    return default


def dvis_config_from_official(values: dict[str, Any], meta_architecture: str | None = None) -> DVISConfig:
    """Build the whole model config from a released flat config.

    ``META_ARCHITECTURE`` (``DVIS_online`` / ``DVIS_offline`` / ``MinVIS``) decides whether the
    model has a tracker and a refiner; ``meta_architecture`` overrides it.
    """
    flat = normalise(values)
    arch = meta_architecture or str(_get(flat, "META_ARCHITECTURE", "DVIS_offline"))
    num_classes = int(_get(flat, "NUM_CLASSES"))
    hidden = int(_get(flat, "HIDDEN_DIM"))
    common = dict(
        num_classes=num_classes,
        hidden_dim=hidden,
        feedforward_dim=int(_get(flat, "DIM_FEEDFORWARD")),
        num_heads=int(_get(flat, "NHEADS")),
        mask_dim=hidden,  # the release's tracker/refiner mask embedding width is HIDDEN_DIM
    )
    tracker = refiner = None
    if "online" in arch.lower() or "offline" in arch.lower():
        tracker = TrackerConfig(
            num_layers=int(_get(flat, "TRACKER_DECODER_LAYERS", 6)), matching="dvis-release", **common
        )
    if "offline" in arch.lower():
        refiner = RefinerConfig(num_layers=int(_get(flat, "REFINER_DECODER_LAYERS", 6)), **common)
    inference = InferenceConfig(
        mode="offline" if refiner else ("online" if tracker else "minvis"),
        task=str(_get(flat, "TEST_TASK", "vis")),
        window_size=int(_get(flat, "TEST_WINDOW_SIZE", 30)),
        max_num=int(_get(flat, "TEST_MAX_NUM", 20)),
        object_mask_threshold=float(_get(flat, "TEST_OBJECT_MASK_THRESHOLD", 0.8)),
        overlap_threshold=float(_get(flat, "TEST_OVERLAP_THRESHOLD", 0.8)),
        min_size_test=int(_get(flat, "MIN_SIZE_TEST", 360)),
        max_size_test=int(_get(flat, "MAX_SIZE_TEST", 1333)),
    )
    return DVISConfig(SegmenterConfig.from_official(values), tracker, refiner, inference)
