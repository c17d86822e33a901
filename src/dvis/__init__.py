"""DVIS: Decoupled Video Instance Segmentation (ICCV 2023).

Three stages, each frozen while the next trains: a per-frame segmenter (Mask2Former), an online
referring tracker and an offline temporal refiner. The public API, importable from ``dvis``::

    from dvis import VideoPredictor
    predictor = VideoPredictor.from_pretrained("synthetic-demo", mode="offline")
    instances = predictor("clip.mp4")

    from dvis import DVIS, build_config, load_official          # a released checkpoint, in memory
    model = DVIS(build_config("dvis-offline-ovis-r50")).eval()
    load_official(model, "DVIS_offline_ovis_r50.pth")

Names are imported on first use (``import dvis`` stays light, for the ``dvis`` command's start).
Layers and the path of a video through them: ``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

from dvis.errors import CheckpointError, ConfigError, DataError, DVISError, InputError, OutputWriteError

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    # the model and its configs
    "DVIS": "dvis.modeling.dvis",
    "DVISConfig": "dvis.modeling.dvis",
    "InferenceConfig": "dvis.modeling.dvis",
    "SegmenterConfig": "dvis.modeling.segmenter",
    "Mask2FormerSegmenter": "dvis.modeling.segmenter",
    "TrackerConfig": "dvis.modeling.tracker",
    "RefinerConfig": "dvis.modeling.refiner",
    "save_pretrained": "dvis.modeling.io",
    "load_pretrained": "dvis.modeling.io",
    # loading by name (shipped model, model folder, release preset + weights) and predicting
    "load_model": "dvis.inference.registry",
    "VideoPredictor": "dvis.inference.predictor",
    "resize_video": "dvis.inference.transforms",
    # the release: presets, checkpoints, model zoo
    "PRESETS": "dvis.compat.presets",
    "get_preset": "dvis.compat.presets",
    "build_config": "dvis.compat.presets",
    "load_official": "dvis.compat.checkpoint",
    "RELEASED": "dvis.compat.release_zoo",
    # data
    "open_video": "dvis.data.video",
    # evaluation, as the public benchmarks compute it
    "evaluate_ytvis": "dvis.evaluation.api",
    "evaluate_vpq": "dvis.evaluation.api",
    "evaluate_stq": "dvis.evaluation.api",
    "evaluate_vss": "dvis.evaluation.api",
    # training
    "load_train_config": "dvis.training.config",
    "train": "dvis.training.loop",
}

__all__ = sorted([*_EXPORTS, "CheckpointError", "ConfigError", "DataError", "DVISError", "InputError",
                  "OutputWriteError", "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dvis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
