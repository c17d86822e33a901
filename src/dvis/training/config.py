"""Training configuration: a YAML file (``yaml.safe_load``) plus ``key=value`` overrides.

Layout (every section optional except ``model`` and ``data``; defaults are the release's)::

    model:   {segmenter: ..., tracker: ..., refiner: ..., inference: ...}   # DVISConfig sections
    init:    {model: DIR, release_checkpoint: FILE}   # weights to start from
    data:    {format, annotations, image_root, num_frames, augmentation, pseudo_videos, ...}
    solver:  {max_iter, steps, base_lr, batch_size, clips_per_gpu, ...}
    loss:    {class_weight, mask_weight, dice_weight, num_points, ...}
    cache:   {enabled, dir, dtype}
    validation: {annotations, period, mode, metric, synthetic}   # best-checkpoint selection
    output_dir: DIR
    seed: 0

Overrides use dotted keys (``solver.max_iter=100``, ``model.tracker.num_layers=3``); values are
parsed as YAML scalars/lists (``solver.steps=[10,20]``). An unknown key is a :class:`ConfigError`
that names it and lists the closest known keys.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dvis.compat.official import NO_OBJECT_WEIGHT
from dvis.config import check_keys, dotted_keys, from_dict, unknown_key_error
from dvis.data.coco_categories import resolve_category_map
from dvis.errors import ConfigError
from dvis.modeling.dvis import MODES, InferenceConfig
from dvis.modeling.fast_path import PRECISIONS
from dvis.modeling.refiner import RefinerConfig
from dvis.modeling.segmenter import SegmenterConfig
from dvis.modeling.tracker import TrackerConfig
from dvis.training.stage_names import STAGES

DATA_FORMATS = ("ytvis", "vipseg", "coco-pseudo-video")
MODEL_SECTIONS = {"segmenter": SegmenterConfig, "tracker": TrackerConfig, "refiner": RefinerConfig,
                  "inference": InferenceConfig}
SWITCHES = ("auto", "on", "off")  # solver.amp, solver.find_unused_parameters, cache.enabled
VALIDATION_METRICS = ("AP", "AP50", "AP75", "AP_light", "AP_medium", "AP_heavy")


def _check(checks: list[tuple[bool, str]]) -> None:
    """Raise ConfigError with the message of the first failed check (messages start with the field)."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


@dataclass
class AugmentationConfig:
    """One random transform per clip (see :class:`dvis.data.augment.ClipAugmentation`)."""

    short_sides: list[int] = field(default_factory=lambda: [240, 360, 480])
    max_size: int = 1333
    flip_prob: float = 0.5
    crop: list[int] | None = None  # absolute-range crop [lo, hi]; None = no crop
    crop_prob: float = 0.5
    crop_resize: list[int] = field(default_factory=lambda: [400, 500, 600])

    def validate(self) -> None:
        _check([
            (bool(self.short_sides) and min(self.short_sides) >= 1, f"short_sides = {self.short_sides}: expected sizes >= 1"),
            (self.max_size >= 1, f"max_size = {self.max_size}: expected >= 1"),
            (0.0 <= self.flip_prob <= 1.0, f"flip_prob = {self.flip_prob}: expected a probability in [0, 1]"),
            (0.0 <= self.crop_prob <= 1.0, f"crop_prob = {self.crop_prob}: expected a probability in [0, 1]"),
            (self.crop is None or len(self.crop) == 2, f"crop = {self.crop}: expected [lo, hi] or null"),
        ])


@dataclass
class SyntheticConfig:
    """Generate the synthetic benchmark into ``data.root`` when it does not exist yet."""

    videos: int = 40
    frames: int = 24
    seed: int = 0
    height: int = 128
    width: int = 128
    objects: list[int] = field(default_factory=lambda: [2, 6])
    occlusion: str = "heavy"

    def validate(self) -> None:
        _check([
            (min(self.videos, self.frames, self.height, self.width) >= 1,
             "videos, frames, height and width must be >= 1"),
            (len(self.objects) == 2 and 0 <= self.objects[0] <= self.objects[1],
             f"objects = {self.objects}: expected [min, max] with 0 <= min <= max"),
        ])


@dataclass
class PseudoVideoConfig:
    """COCO images turned into pseudo videos and mixed with the video set (data.format ytvis), as
    the release trains YouTube-VIS and OVIS (``DATASETS.TRAIN: (coco2ytvis2019_train, ...)``).
    Paths are relative to ``root`` (the working directory when null)."""

    root: str | None = None
    annotations: str | None = None  # COCO instances JSON, e.g. annotations/instances_train2017.json
    image_root: str | None = None  # its images, e.g. train2017
    category_map: dict[int, int] | str | None = None  # ytvis19 | ytvis21 | ovis | {coco_id: video_id}
    ratio: float = 1.0  # sampling weight of the pseudo videos (the release's DATASET_RATIO[0])
    video_ratio: float = 1.0  # sampling weight of the video set (DATASET_RATIO[1])
    max_size: int | None = 768  # long-side cap of pseudo clips (INPUT.PSEUDO.MAX_SIZE_TRAIN); null: augmentation's

    def validate(self) -> None:
        share = min(self.ratio, self.video_ratio) / max(self.ratio + self.video_ratio, 1e-30)
        _check([
            (self.ratio > 0 and self.video_ratio > 0,
             f"ratio = {self.ratio} and video_ratio = {self.video_ratio}: both must be > 0"),
            (share >= 1e-3, f"ratio : video_ratio = {self.ratio} : {self.video_ratio}: each share must be at "
                            "least 1/1000 (the mix is laid out in blocks of 1000 clips)"),
            (self.max_size is None or self.max_size >= 1, f"max_size = {self.max_size}: expected >= 1 or null"),
        ])
        resolve_category_map(self.category_map, "category_map")


@dataclass
class DataConfig:
    format: str = "ytvis"  # ytvis | vipseg | coco-pseudo-video (COCO JSON + images, pseudo videos only)
    root: str | None = None  # base folder; relative paths below are resolved against it
    annotations: str | None = None  # ytvis: annotation JSON; vipseg: panoptic JSON
    image_root: str | None = None  # ytvis: JPEGImages folder; vipseg: frames folder
    panoptic_root: str | None = None  # vipseg: panoptic PNG folder
    num_frames: int = 5
    frame_range: int = 2
    reverse: bool = False
    augmentation: AugmentationConfig | None = field(default_factory=AugmentationConfig)
    num_workers: int = 2
    synthetic: SyntheticConfig | None = None
    pseudo_videos: PseudoVideoConfig | None = None  # COCO pseudo videos mixed in (format ytvis)

    def validate(self) -> None:
        _check([
            (self.format in DATA_FORMATS, f"format = {self.format!r}: expected one of {', '.join(DATA_FORMATS)}"),
            (self.num_frames >= 1, f"num_frames = {self.num_frames}: expected >= 1"),
            (self.pseudo_videos is None or self.format == "ytvis",
             f"pseudo_videos needs data.format = 'ytvis' (got {self.format!r})"),
        ])


@dataclass
class SolverConfig:
    max_iter: int = 20000
    steps: list[int] = field(default_factory=lambda: [14000])
    gamma: float = 0.1
    warmup_iters: int = 10
    warmup_factor: float = 1.0
    base_lr: float = 1e-4
    weight_decay: float = 0.05
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    backbone_multiplier: float = 0.1
    clip_grad_norm: float | None = 0.01  # full-model L2 norm; None = no clipping
    batch_size: int = 8  # effective clips per optimizer step = clips_per_gpu x world x accumulation
    clips_per_gpu: int = 1
    amp: str = "auto"  # auto (on CUDA) | on | off
    precision: str = "fp32"  # segmenter forward passes: fp32 | bf16 (the fast path, dvis.modeling.fast_path)
    checkpoint_period: int = 1000
    log_period: int = 20
    find_unused_parameters: str = "auto"  # auto | on | off (DDP)

    def validate(self) -> None:
        _check([
            (self.max_iter >= 1, f"max_iter = {self.max_iter}: expected >= 1"),
            (self.batch_size >= 1 and self.clips_per_gpu >= 1, "batch_size and solver.clips_per_gpu must be >= 1"),
            (self.amp in SWITCHES, f"amp = {self.amp!r}: expected auto, on or off"),
            (self.precision in PRECISIONS, f"precision = {self.precision!r}: expected fp32 or bf16"),
            (self.find_unused_parameters in SWITCHES, "find_unused_parameters: expected auto, on or off"),
            (self.checkpoint_period >= 1 and self.log_period >= 1, "checkpoint_period and log_period must be >= 1"),
        ])


@dataclass
class LossConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = NO_OBJECT_WEIGHT
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True
    guided_fraction: float = 0.5  # tracker/refiner: match with the frozen stage's output before this

    def validate(self) -> None:
        _check([
            (self.num_points >= 1, "num_points must be >= 1"),
            (0.0 <= self.importance_sample_ratio <= 1.0, "importance_sample_ratio must be in [0, 1]"),
            (0.0 <= self.guided_fraction <= 1.0, "guided_fraction must be in [0, 1]"),
        ])


@dataclass
class CacheConfig:
    enabled: str = "auto"  # auto (when augmentation is off) | on | off
    dir: str | None = None  # default: OUTPUT_DIR/segmenter_cache
    dtype: str = "float16"  # float16 | float32 (mask features and mask logits)

    def validate(self) -> None:
        _check([
            (self.enabled in SWITCHES, f"enabled = {self.enabled!r}: expected auto, on or off"),
            (self.dtype in ("float16", "float32"), f"dtype = {self.dtype!r}: expected float16 or float32"),
        ])


@dataclass
class ValidationConfig:
    """Videos never trained on, scored during training to keep the best checkpoint
    (:mod:`dvis.training.validation`). Off when ``annotations`` is null."""

    annotations: str | None = None  # YouTube-VIS annotation JSON
    image_root: str | None = None  # default: JPEGImages beside the annotations
    period: int = 500  # iterations between validations (and at the end)
    mode: str | None = None  # default: minvis / online / offline for segmenter / tracker / refiner
    metric: str = "AP"  # AP AP50 AP75 AP_light AP_medium AP_heavy
    synthetic: SyntheticConfig | None = None  # generate the split there when it is missing

    def validate(self) -> None:
        _check([
            (self.period >= 1, f"period = {self.period}: expected >= 1"),
            (self.mode is None or self.mode in MODES,
             f"mode = {self.mode!r}: expected {', '.join(MODES)} (or null: the stage's mode)"),
            (self.metric in VALIDATION_METRICS,
             f"metric = {self.metric!r}: expected one of {', '.join(VALIDATION_METRICS)}"),
        ])


@dataclass
class InitConfig:
    model: str | None = None  # our model folder (config.yaml + model.safetensors), e.g. a previous stage's
    release_checkpoint: str | None = None  # a released DVIS/MinVIS .pth for the segmenter (and tracker)

    def validate(self) -> None:
        """Nothing to check here: the paths are checked when the stage model is built."""


@dataclass
class TrainConfig:
    model: dict[str, Any]
    data: DataConfig
    solver: SolverConfig = field(default_factory=SolverConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    init: InitConfig = field(default_factory=InitConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    output_dir: str = "output"
    seed: int = 0
    stage: str | None = None  # optional: the stage this file is meant for

    def validate(self) -> None:
        """The sections validate themselves; here: the stage name."""
        if self.stage is not None and self.stage not in STAGES:
            raise ConfigError(f"stage = {self.stage!r}; expected one of {STAGES}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = ("data", "solver", "loss", "cache", "init", "validation")


# ------------------------------------------------------------------------------------ key lists
def known_keys() -> list[str]:
    """Every dotted key a config may set (for error messages and close matches)."""
    keys = [k for k in dotted_keys(TrainConfig) if k not in _SECTIONS and k != "model"]
    for name, cls in MODEL_SECTIONS.items():
        keys.append(f"model.{name}")
        keys += dotted_keys(cls, f"model.{name}.")
    return keys


# ---------------------------------------------------------------------------------- conversion
def check_model_sections(model: dict[str, Any], source: str) -> None:
    """Each given ``model.*`` section must load as its config class (they stay plain dicts: a stage
    takes the sections it lacks from ``init.model``)."""
    check_keys(model, list(MODEL_SECTIONS), source, "model.")
    for name, values in model.items():
        if values is not None:
            from_dict(MODEL_SECTIONS[name], values, source=source, prefix=f"model.{name}.")


def train_config_from_dict(values: Any, source: str = "config") -> TrainConfig:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(values).__name__}")
    if "data" not in values:
        raise ConfigError(f"{source}: missing section 'data'")
    values = {**values, "model": copy.deepcopy(values.get("model")) or {}}
    config = from_dict(TrainConfig, values, source=source)
    check_model_sections(config.model, source)
    return config


# ----------------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. solver.max_iter=100")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse the value: {err}") from None
    return key, value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in the raw dict; an unknown key raises :class:`ConfigError`."""
    values = copy.deepcopy(values)
    known = set(known_keys())
    for text in overrides:
        key, value = parse_override(text)
        if key not in known:
            raise unknown_key_error(key, sorted(known), "override")
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return values


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read YAML: {err}") from None
    values = apply_overrides(values or {}, overrides or [])
    return train_config_from_dict(values, str(path))  # relative paths: relative to the cwd


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
