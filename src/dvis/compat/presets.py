"""Named presets for the released DVIS configs (``configs/*`` of the public DVIS repository).

Each released yaml file is recorded below as the values it sets itself plus its ``_BASE_``;
:func:`release_values` resolves the inheritance chain over the defaults the release registers
(detectron2, Mask2Former, MinVIS/DVIS ``add_*_config``), exactly as detectron2's ``merge_from_file``
would for these keys. A :class:`ReleasePreset` is read off the resolved values, and
:func:`build_config` turns it into a :class:`~dvis.modeling.dvis.DVISConfig` that loads the
released checkpoint of that config (tracker matching ``"dvis-release"``).

Names: ``dvis-{online|offline}-{dataset}-{r50|swinl}[-720p|-cocopseudo]`` and
``minvis-{dataset}-{r50|swinl}[...]`` with dataset ``ovis``, ``ytvis19``, ``ytvis21``, ``vipseg``.
Only configs that exist in the release have a preset (VIPSeg R50 exists only as ``-720p``; the
VIPSeg Swin-L configs already test at 720 although their file names carry no ``720p``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from dvis.compat.categories import VIPSEG_THING_CLASSES, dataset_categories
from dvis.compat.official import NO_OBJECT_WEIGHT
from dvis.errors import ConfigError
from dvis.modeling.dvis import DVISConfig, InferenceConfig
from dvis.modeling.refiner import RefinerConfig
from dvis.modeling.segmenter import SegmenterConfig
from dvis.modeling.tracker import TrackerConfig

BACKBONES = ("r50", "swin-l")
PRESET_KINDS = ("online", "offline", "minvis")  # the release's meta-architectures (not inference modes)

_SIZES_720P = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
_SIZES_R50 = (240, 360, 480)
_SIZES_SWIN = (360, 480, 600)

# ----------------------------------------------------------------------------------- defaults
# Values registered before any yaml is read: detectron2's defaults (INPUT.MAX_SIZE_*, SOLVER.GAMMA,
# DATALOADER.FILTER_EMPTY_ANNOTATIONS), Mask2Former's add_maskformer2_config (TEST thresholds 0.0),
# add_maskformer2_video_config (SAMPLING_FRAME_NUM 2, RANGE 20) and DVIS's add_dvis_config.
_DEFAULTS: dict[str, Any] = {
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MAX_SIZE_TEST": 1333,
    "SOLVER.GAMMA": 0.1,
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": True,
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.0,
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.0,
    "INPUT.SAMPLING_FRAME_NUM": 2,
    "INPUT.SAMPLING_FRAME_RANGE": 20,
    "INPUT.SAMPLING_FRAME_SHUFFLE": False,
    "INPUT.REVERSE_AGU": False,
    "MODEL.TRACKER.DECODER_LAYERS": 6,
    "MODEL.REFINER.DECODER_LAYERS": 6,
    "MODEL.MASK_FORMER.TEST.WINDOW_SIZE": 3,
    "MODEL.MASK_FORMER.TEST.TASK": "vis",
    "MODEL.MASK_FORMER.TEST.MAX_NUM": 20,
    "INPUT.PSEUDO.AUGMENTATIONS": ("rotation",),
    "INPUT.PSEUDO.MIN_SIZE_TRAIN": (480, 512, 544, 576, 608, 640, 672, 704, 736, 768),
    "INPUT.PSEUDO.MAX_SIZE_TRAIN": 768,
    "INPUT.PSEUDO.MIN_SIZE_TRAIN_SAMPLING": "choice_by_clip",
    "INPUT.PSEUDO.CROP.ENABLED": False,
    "INPUT.PSEUDO.CROP.TYPE": "absolute_range",
    "INPUT.PSEUDO.CROP.SIZE": (384, 600),
    "INPUT.LSJ_AUG.ENABLED": False,
    "SEED": 42,
}


# ------------------------------------------------------------------------- yaml value overlays
def _base_yaml(train: str, test: str, steps: int, max_iter: int, **extra: Any) -> dict[str, Any]:
    """The dataset's ``Base-*.yaml`` (R50 backbone, 16 clips, AdamW, full-model clipping, AMP)."""
    values = {
        "MODEL.BACKBONE.NAME": "build_resnet_backbone",
        "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/torchvision/R-50.pkl",
        "MODEL.MASK_FORMER.TEST.WINDOW_SIZE": 3,
        "MODEL.MASK_FORMER.TEST.TASK": "vis",
        "DATASETS.DATASET_RATIO": (1.0,),
        "DATASETS.DATASET_NEED_MAP": (False,),
        "DATASETS.DATASET_TYPE": ("video_instance",),
        "DATASETS.DATASET_TYPE_TEST": ("video_instance",),
        "DATASETS.TRAIN": (train,),
        "DATASETS.TEST": (test,),
        "SOLVER.IMS_PER_BATCH": 16,
        "SOLVER.BASE_LR": 0.0001,
        "SOLVER.STEPS": (steps,),
        "SOLVER.MAX_ITER": max_iter,
        "SOLVER.WARMUP_FACTOR": 1.0,
        "SOLVER.WARMUP_ITERS": 10,
        "SOLVER.WEIGHT_DECAY": 0.05,
        "SOLVER.OPTIMIZER": "ADAMW",
        "SOLVER.BACKBONE_MULTIPLIER": 0.1,
        "SOLVER.CLIP_GRADIENTS.ENABLED": True,
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.01,
        "SOLVER.CLIP_GRADIENTS.NORM_TYPE": 2.0,
        "SOLVER.AMP.ENABLED": True,
        "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice_by_clip",
        "INPUT.RANDOM_FLIP": "flip_by_clip",
        "INPUT.AUGMENTATIONS": (),
        "INPUT.MIN_SIZE_TRAIN": (360, 480),
        "INPUT.MIN_SIZE_TEST": 360,
        "INPUT.CROP.ENABLED": False,
        "INPUT.CROP.TYPE": "absolute_range",
        "INPUT.CROP.SIZE": (600, 720),
        "INPUT.FORMAT": "RGB",
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS": False,
    }
    values.update(extra)
    return values


def _minvis_model(num_classes: int) -> dict[str, Any]:
    """Model and loss keys every ``MinVIS_*.yaml`` sets (Mask2Former R50 COCO weights)."""
    return {
        "MODEL.WEIGHTS": "model_final_3c8ec9.pkl",
        "MODEL.META_ARCHITECTURE": "MinVIS",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": num_classes,
        "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "VideoMultiScaleMaskedTransformerDecoder_minvis",
        "MODEL.MASK_FORMER.DEEP_SUPERVISION": True,
        "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": NO_OBJECT_WEIGHT,
        "MODEL.MASK_FORMER.CLASS_WEIGHT": 2.0,
        "MODEL.MASK_FORMER.MASK_WEIGHT": 5.0,
        "MODEL.MASK_FORMER.DICE_WEIGHT": 5.0,
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100,
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 12544,
        "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": 3.0,
        "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": 0.75,
        "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.8,
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.8,
        "MODEL.MASK_FORMER.TEST.WINDOW_SIZE": 3,
    }


def _pseudo(min_sizes: tuple[int, ...], max_size: int, crop: bool, crop_type: str, crop_size: tuple) -> dict:
    return {
        "INPUT.PSEUDO.AUGMENTATIONS": ("rotation",),
        "INPUT.PSEUDO.MIN_SIZE_TRAIN": min_sizes,
        "INPUT.PSEUDO.MAX_SIZE_TRAIN": max_size,
        "INPUT.PSEUDO.CROP.ENABLED": crop,
        "INPUT.PSEUDO.CROP.TYPE": crop_type,
        "INPUT.PSEUDO.CROP.SIZE": crop_size,
    }


def _solver(steps: int, max_iter: int) -> dict[str, Any]:
    return {"SOLVER.IMS_PER_BATCH": 8, "SOLVER.STEPS": (steps,), "SOLVER.MAX_ITER": max_iter}


def _minvis_solver(steps: int, max_iter: int) -> dict[str, Any]:
    return {**_solver(steps, max_iter), "SOLVER.BASE_LR": 0.0001, "SOLVER.WARMUP_FACTOR": 1.0,
            "SOLVER.WARMUP_ITERS": 10, "SOLVER.WEIGHT_DECAY": 0.05}


def _minvis_input(min_sizes: tuple[int, ...], min_size_test: int, crop: bool, crop_size=(384, 600),
                  crop_type="absolute_range", sampling="choice_by_clip", flip="flip_by_clip") -> dict:
    return {
        "INPUT.MIN_SIZE_TRAIN": min_sizes,
        "INPUT.MIN_SIZE_TEST": min_size_test,
        "INPUT.SAMPLING_FRAME_NUM": 1,
        "INPUT.SAMPLING_FRAME_SHUFFLE": False,
        "INPUT.MIN_SIZE_TRAIN_SAMPLING": sampling,
        "INPUT.RANDOM_FLIP": flip,
        "INPUT.AUGMENTATIONS": (),
        "INPUT.CROP.ENABLED": crop,
        "INPUT.CROP.TYPE": crop_type,
        "INPUT.CROP.SIZE": crop_size,
        "INPUT.LSJ_AUG.ENABLED": False,
    }


def _online(steps: int, max_iter: int) -> dict[str, Any]:
    """What every ``DVIS_Online_*.yaml`` adds to its MinVIS parent: 5-frame clips."""
    return {
        "MODEL.META_ARCHITECTURE": "DVIS_online",
        "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "VideoMultiScaleMaskedTransformerDecoder_dvis",
        **_solver(steps, max_iter),
        "INPUT.SAMPLING_FRAME_NUM": 5,
        "INPUT.SAMPLING_FRAME_RANGE": 2,
    }


def _offline(steps: int, max_iter: int, **extra: Any) -> dict[str, Any]:
    """What every ``DVIS_Offline_*.yaml`` adds to its online parent: 21-frame clips, reversal."""
    return {
        "MODEL.META_ARCHITECTURE": "DVIS_offline",
        **_solver(steps, max_iter),
        "INPUT.SAMPLING_FRAME_NUM": 21,
        "INPUT.SAMPLING_FRAME_RANGE": 10,
        "INPUT.REVERSE_AGU": True,
        **extra,
    }


def _offline_r50(steps: int, max_iter: int) -> dict[str, Any]:
    """OVIS / YouTube-VIS offline R50: also 240-480 train sizes and an enabled 384-600 crop."""
    return _offline(
        steps, max_iter,
        **{"INPUT.MIN_SIZE_TRAIN": _SIZES_R50, "INPUT.MIN_SIZE_TEST": 360, "INPUT.CROP.ENABLED": True,
           "INPUT.CROP.TYPE": "absolute_range", "INPUT.CROP.SIZE": (384, 600),
           **_pseudo(_SIZES_R50, 768, True, "absolute_range", (384, 600))})


_R50_720P = {
    "INPUT.MIN_SIZE_TRAIN": _SIZES_720P,
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MIN_SIZE_TEST": 720,
    "INPUT.PSEUDO.MAX_SIZE_TRAIN": 1333,
    "INPUT.PSEUDO.MIN_SIZE_TRAIN": _SIZES_720P,
}

_SWIN_L = {
    "MODEL.BACKBONE.NAME": "D2SwinTransformer",
    "MODEL.WEIGHTS": "model_final_e5f453.pkl",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 200,
    "SOLVER.IMS_PER_BATCH": 8,
}

# Swin-L configs that are not 720p also change the train/test sizes.
_SWIN_L_SIZES = {
    **_SWIN_L,
    "INPUT.MIN_SIZE_TRAIN": _SIZES_SWIN,
    "INPUT.MAX_SIZE_TRAIN": 1024,
    "INPUT.MIN_SIZE_TEST": 480,
    "INPUT.PSEUDO.MIN_SIZE_TRAIN": _SIZES_SWIN,
}


def _ytvis_minvis(year: str, crop: bool, ratio: float) -> dict[str, Any]:
    return {
        **_minvis_model(40),
        **_minvis_solver(14000, 20000),
        **_minvis_input(_SIZES_R50, 360, crop),
        "INPUT.MAX_SIZE_TRAIN": 768,
        **_pseudo(_SIZES_R50, 768, crop, "absolute_range", (384, 600)),
        "DATASETS.DATASET_NEED_MAP": (True, False),
        "DATASETS.DATASET_TYPE": ("image_instance", "video_instance"),
        "DATASETS.DATASET_TYPE_TEST": ("video_instance",),
        "DATASETS.DATASET_RATIO": (1.0, ratio),
        "DATASETS.TRAIN": (f"coco2ytvis{year}_train", f"ytvis_{year}_train"),
        "DATASETS.TEST": (f"ytvis_{year}_val",),
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS": True,
    }


def _vipseg_minvis() -> dict[str, Any]:
    return {
        **_minvis_model(124),
        **_solver(14000, 20000),
        **_minvis_input(_SIZES_720P, 720, False, (608, 608), "absolute", "choice", "flip"),
        "INPUT.MAX_SIZE_TRAIN": 1333,
        **_pseudo(_SIZES_720P, 1333, False, "absolute", (608, 608)),
    }


_OVIS_MINVIS = {
    **_minvis_model(25),
    **_minvis_solver(14000, 20000),
    **_minvis_input(_SIZES_R50, 360, False),
    **_pseudo(_SIZES_R50, 768, False, "absolute_range", (384, 600)),
}

_COCO2OVIS = {
    **_solver(28000, 40000),
    "DATASETS.DATASET_RATIO": (1.0, 1.0),
    "DATASETS.DATASET_NEED_MAP": (True, False),
    "DATASETS.DATASET_TYPE": ("image_instance", "video_instance"),
    "DATASETS.TRAIN": ("coco2ovis_train", "ovis_train"),
}

# Released yaml path -> (its _BASE_, the values it sets itself).
_YAML: dict[str, tuple[str | None, dict[str, Any]]] = {
    # OVIS
    "configs/ovis/Base-OVIS-VideoInstanceSegmentation.yaml": (
        None, _base_yaml("ovis_train", "ovis_val", 7000, 10000)),
    "configs/ovis/MinVIS_R50.yaml": ("configs/ovis/Base-OVIS-VideoInstanceSegmentation.yaml", _OVIS_MINVIS),
    "configs/ovis/DVIS_Online_R50.yaml": ("configs/ovis/MinVIS_R50.yaml", _online(14000, 20000)),
    "configs/ovis/DVIS_Offline_R50.yaml": ("configs/ovis/DVIS_Online_R50.yaml", _offline_r50(14000, 20000)),
    "configs/ovis/MinVIS_R50_720p.yaml": ("configs/ovis/MinVIS_R50.yaml", _R50_720P),
    "configs/ovis/DVIS_Online_R50_720p.yaml": ("configs/ovis/DVIS_Online_R50.yaml", _R50_720P),
    "configs/ovis/DVIS_Offline_R50_720p.yaml": ("configs/ovis/DVIS_Offline_R50.yaml", _R50_720P),
    "configs/ovis/MinVIS_R50_cocoPesudo.yaml": ("configs/ovis/MinVIS_R50.yaml", _COCO2OVIS),
    "configs/ovis/DVIS_Online_R50_cocoPesudo.yaml": (
        "configs/ovis/MinVIS_R50_cocoPesudo.yaml", _online(14000, 20000)),
    "configs/ovis/DVIS_Offline_R50_cocoPesudo.yaml": (
        "configs/ovis/DVIS_Online_R50_cocoPesudo.yaml", _offline_r50(14000, 20000)),
    "configs/ovis/swin/MinVIS_SwinL.yaml": ("configs/ovis/MinVIS_R50.yaml", _SWIN_L_SIZES),
    "configs/ovis/swin/DVIS_Online_SwinL.yaml": ("configs/ovis/DVIS_Online_R50.yaml", _SWIN_L_SIZES),
    "configs/ovis/swin/DVIS_Offline_SwinL.yaml": ("configs/ovis/DVIS_Offline_R50.yaml", _SWIN_L_SIZES),
    "configs/ovis/swin/MinVIS_SwinL_720p.yaml": ("configs/ovis/MinVIS_R50_720p.yaml", _SWIN_L),
    "configs/ovis/swin/DVIS_Online_SwinL_720p.yaml": ("configs/ovis/DVIS_Online_R50_720p.yaml", _SWIN_L),
    "configs/ovis/swin/DVIS_Offline_SwinL_720p.yaml": ("configs/ovis/DVIS_Offline_R50_720p.yaml", _SWIN_L),
    # YouTube-VIS 2019
    "configs/youtubevis_2019/Base-YouTubeVIS-VideoInstanceSegmentation.yaml": (
        None, _base_yaml("ytvis_2019_train", "ytvis_2019_val", 4000, 6000,
                         **{"MODEL.MASK_FORMER.TEST.MAX_NUM": 10})),
    "configs/youtubevis_2019/MinVIS_R50.yaml": (
        "configs/youtubevis_2019/Base-YouTubeVIS-VideoInstanceSegmentation.yaml", _ytvis_minvis("2019", True, 0.75)),
    "configs/youtubevis_2019/DVIS_Online_R50.yaml": ("configs/youtubevis_2019/MinVIS_R50.yaml", _online(28000, 40000)),
    "configs/youtubevis_2019/DVIS_Offline_R50.yaml": (
        "configs/youtubevis_2019/DVIS_Online_R50.yaml", _offline_r50(28000, 40000)),
    "configs/youtubevis_2019/swin/MinVIS_SwinL.yaml": ("configs/youtubevis_2019/MinVIS_R50.yaml", _SWIN_L_SIZES),
    "configs/youtubevis_2019/swin/DVIS_Online_SwinL.yaml": (
        "configs/youtubevis_2019/DVIS_Online_R50.yaml", _SWIN_L_SIZES),
    "configs/youtubevis_2019/swin/DVIS_Offline_SwinL.yaml": (
        "configs/youtubevis_2019/DVIS_Offline_R50.yaml", _SWIN_L_SIZES),
    # YouTube-VIS 2021
    "configs/youtubevis_2021/Base-YouTubeVIS-VideoInstanceSegmentation.yaml": (
        None, _base_yaml("ytvis_2021_train", "ytvis_2021_val", 5500, 8000,
                         **{"MODEL.MASK_FORMER.TEST.MAX_NUM": 10})),
    "configs/youtubevis_2021/MinVIS_R50.yaml": (
        "configs/youtubevis_2021/Base-YouTubeVIS-VideoInstanceSegmentation.yaml", _ytvis_minvis("2021", False, 1.0)),
    "configs/youtubevis_2021/DVIS_Online_R50.yaml": ("configs/youtubevis_2021/MinVIS_R50.yaml", _online(28000, 40000)),
    "configs/youtubevis_2021/DVIS_Offline_R50.yaml": (
        "configs/youtubevis_2021/DVIS_Online_R50.yaml", _offline_r50(28000, 40000)),
    "configs/youtubevis_2021/swin/MinVIS_SwinL.yaml": ("configs/youtubevis_2021/MinVIS_R50.yaml", _SWIN_L_SIZES),
    "configs/youtubevis_2021/swin/DVIS_Online_SwinL.yaml": (
        "configs/youtubevis_2021/DVIS_Online_R50.yaml", _SWIN_L_SIZES),
    "configs/youtubevis_2021/swin/DVIS_Offline_SwinL.yaml": (
        "configs/youtubevis_2021/DVIS_Offline_R50.yaml", _SWIN_L_SIZES),
    # VIPSeg (video panoptic; per-frame flip and size choice, 608x608 absolute crop)
    "configs/VIPSeg/Base-VIPSeg-VideoInstanceSegmentation.yaml": (
        None, _base_yaml("panoVSPW_vps_video_train", "panoVSPW_vps_video_val", 7000, 10000, **{
            "MODEL.MASK_FORMER.TEST.TASK": "vps",
            "DATASETS.DATASET_TYPE": ("video_panoptic",),
            "DATASETS.DATASET_TYPE_TEST": ("video_panoptic",),
            "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
            "INPUT.RANDOM_FLIP": "flip"})),
    "configs/VIPSeg/MinVIS_R50_720p.yaml": ("configs/VIPSeg/Base-VIPSeg-VideoInstanceSegmentation.yaml", _vipseg_minvis()),
    "configs/VIPSeg/DVIS_Online_R50_720p.yaml": ("configs/VIPSeg/MinVIS_R50_720p.yaml", _online(14000, 20000)),
    "configs/VIPSeg/DVIS_Offline_R50_720p.yaml": (
        "configs/VIPSeg/DVIS_Online_R50_720p.yaml",
        _offline(14000, 20000, **{"INPUT.CROP.ENABLED": True, "INPUT.PSEUDO.CROP.ENABLED": True})),
    "configs/VIPSeg/swin/MinVIS_SwinL.yaml": ("configs/VIPSeg/MinVIS_R50_720p.yaml", _SWIN_L),
    "configs/VIPSeg/swin/DVIS_Online_SwinL.yaml": ("configs/VIPSeg/DVIS_Online_R50_720p.yaml", _SWIN_L),
    "configs/VIPSeg/swin/DVIS_Offline_SwinL.yaml": ("configs/VIPSeg/DVIS_Offline_R50_720p.yaml", _SWIN_L),
}

_DATASET_DIRS = {"ovis": "configs/ovis", "ytvis19": "configs/youtubevis_2019",
                 "ytvis21": "configs/youtubevis_2021", "vipseg": "configs/VIPSeg"}
_SUFFIXES = {"720p": "720p", "cocoPesudo": "cocopseudo"}  # file-name variant -> preset suffix
_META_TO_MODE = {"MinVIS": "minvis", "DVIS_online": "online", "DVIS_offline": "offline"}
# Keys that describe the network or inference, not training (everything else goes to ``train``).
_NON_TRAIN_KEYS = {
    "MODEL.META_ARCHITECTURE", "MODEL.BACKBONE.NAME", "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME",
    "INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST", "INPUT.FORMAT",
}


def release_values(config_file: str) -> dict[str, Any]:
    """All recorded values of one released yaml, with its ``_BASE_`` chain and defaults resolved."""
    if config_file not in _YAML:
        raise ConfigError(f"no recorded release config {config_file!r}; known: {', '.join(sorted(_YAML))}")
    chain = []
    path: str | None = config_file
    while path is not None:
        base, values = _YAML[path]
        chain.append(values)
        path = base
    resolved = dict(_DEFAULTS)
    for values in reversed(chain):
        resolved.update(values)
    return resolved


# --------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class ReleasePreset:
    """One released config: what its model is, how it infers, and how it was trained.

    ``train`` maps release config keys (``"SOLVER.BASE_LR"``, ``"INPUT.SAMPLING_FRAME_NUM"``,
    ``"INPUT.PSEUDO.CROP.SIZE"``, ``"DATASETS.TRAIN"``, ...) to their resolved values (read-only).
    ``INPUT.PSEUDO.*`` (COCO pseudo videos) only takes effect where ``DATASETS.DATASET_TYPE``
    contains ``"image_instance"``.
    """

    name: str
    dataset: str  # "ovis" | "ytvis19" | "ytvis21" | "vipseg"
    backbone: str  # "r50" | "swin-l"
    mode: str  # one of PRESET_KINDS: "online" | "offline" | "minvis"
    num_classes: int
    num_queries: int
    min_size_test: int
    max_size_test: int
    max_num: int  # MODEL.MASK_FORMER.TEST.MAX_NUM
    window_size: int  # MODEL.MASK_FORMER.TEST.WINDOW_SIZE
    object_mask_threshold: float
    overlap_threshold: float
    task: str  # "vis" | "vps"
    thing_classes: tuple[int, ...]
    config_file: str
    train: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def categories(self) -> tuple[tuple[int, str], ...]:
        """(dataset category id, name) per class index: OVIS / YouTube-VIS ids 1..K, VIPSeg 0..123."""
        return dataset_categories(self.dataset)


def _preset_from_yaml(name: str, dataset: str, config_file: str) -> ReleasePreset:
    values = release_values(config_file)
    num_classes = int(values["MODEL.SEM_SEG_HEAD.NUM_CLASSES"])
    task = values["MODEL.MASK_FORMER.TEST.TASK"]
    backbone = "swin-l" if values["MODEL.BACKBONE.NAME"] == "D2SwinTransformer" else "r50"
    return ReleasePreset(
        name=name,
        dataset=dataset,
        backbone=backbone,
        mode=_META_TO_MODE[values["MODEL.META_ARCHITECTURE"]],
        num_classes=num_classes,
        num_queries=int(values["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES"]),
        min_size_test=int(values["INPUT.MIN_SIZE_TEST"]),
        max_size_test=int(values["INPUT.MAX_SIZE_TEST"]),
        max_num=int(values["MODEL.MASK_FORMER.TEST.MAX_NUM"]),
        window_size=int(values["MODEL.MASK_FORMER.TEST.WINDOW_SIZE"]),
        object_mask_threshold=float(values["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD"]),
        overlap_threshold=float(values["MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD"]),
        task=task,
        thing_classes=VIPSEG_THING_CLASSES if task == "vps" else tuple(range(num_classes)),
        config_file=config_file,
        train=MappingProxyType({k: v for k, v in values.items() if k not in _NON_TRAIN_KEYS}),
    )


def _release_files() -> list[tuple[str, str, str]]:
    """(preset name, dataset, yaml path) for every released model config."""
    found = []
    for dataset, folder in _DATASET_DIRS.items():
        for path in _YAML:
            if not path.startswith(folder + "/") or "/Base-" in path:
                continue
            stem = path.rsplit("/", 1)[1].removesuffix(".yaml")
            arch, _, variant = stem.partition("_")  # "DVIS", "Online_R50_720p"
            parts = variant.split("_")
            mode = "minvis" if arch == "MinVIS" else parts.pop(0).lower()
            backbone = {"R50": "r50", "SwinL": "swinl"}[parts.pop(0)]
            suffix = "".join(f"-{_SUFFIXES[p]}" for p in parts)
            prefix = "minvis" if mode == "minvis" else f"dvis-{mode}"
            found.append((f"{prefix}-{dataset}-{backbone}{suffix}", dataset, path))
    return found


PRESETS: dict[str, ReleasePreset] = {
    name: _preset_from_yaml(name, dataset, path) for name, dataset, path in _release_files()
}


def get_preset(name: str) -> ReleasePreset:
    """The preset called ``name``; ConfigError naming close matches and all names otherwise."""
    if isinstance(name, str) and name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(str(name), list(PRESETS), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown preset {name!r}.{hint} Known presets: {', '.join(sorted(PRESETS))}")


def build_config(name_or_preset: str | ReleasePreset) -> DVISConfig:
    """The DVISConfig that the released checkpoint of this preset loads into.

    Segmenter from :meth:`SegmenterConfig.preset` with the preset's classes and queries; tracker
    (``matching="dvis-release"``) and refiner with the release's 6 layers and widths, present as
    the mode requires; inference fields from the preset.
    """
    preset = name_or_preset if isinstance(name_or_preset, ReleasePreset) else get_preset(name_or_preset)
    segmenter = replace(SegmenterConfig.preset(preset.backbone, preset.num_classes), num_queries=preset.num_queries)
    common = dict(
        num_classes=preset.num_classes,
        hidden_dim=segmenter.hidden_dim,
        feedforward_dim=segmenter.dim_feedforward,
        num_heads=segmenter.num_heads,
        mask_dim=segmenter.hidden_dim,  # the release's tracker/refiner mask embedding is HIDDEN_DIM wide
    )
    tracker = refiner = None
    if preset.mode in ("online", "offline"):
        tracker = TrackerConfig(num_layers=int(preset.train["MODEL.TRACKER.DECODER_LAYERS"]),
                                matching="dvis-release", **common)
    if preset.mode == "offline":
        refiner = RefinerConfig(num_layers=int(preset.train["MODEL.REFINER.DECODER_LAYERS"]), **common)
    inference = InferenceConfig(
        mode=preset.mode,
        task=preset.task,
        window_size=preset.window_size,
        max_num=preset.max_num,
        object_mask_threshold=preset.object_mask_threshold,
        overlap_threshold=preset.overlap_threshold,
        thing_classes=preset.thing_classes,
        min_size_test=preset.min_size_test,
        max_size_test=preset.max_size_test,
    )
    return DVISConfig(segmenter, tracker, refiner, inference)
