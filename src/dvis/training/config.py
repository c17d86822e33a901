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
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dvis.data.coco_categories import resolve_category_map
from dvis.errors import ConfigError
from dvis.modeling.dvis import InferenceConfig
from dvis.modeling.refiner import RefinerConfig
from dvis.modeling.segmenter import SegmenterConfig
from dvis.modeling.tracker import TrackerConfig

STAGES = ("segmenter", "tracker", "refiner")
DATA_FORMATS = ("ytvis", "vipseg", "coco-pseudo-video")
MODEL_SECTIONS = {"segmenter": SegmenterConfig, "tracker": TrackerConfig, "refiner": RefinerConfig,
                  "inference": InferenceConfig}


@dataclass
class AugmentationConfig:
    """One random transform per clip (see :class:`dvis.data.augment.ClipAugmentation`)."""

    short_sides: list[int] = field(default_factory=lambda: [240, 360, 480])
    max_size: int = 1333
    flip_prob: float = 0.5
    crop: list[int] | None = None  # absolute-range crop [lo, hi]; None = no crop
    crop_prob: float = 0.5
    crop_resize: list[int] = field(default_factory=lambda: [400, 500, 600])


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


@dataclass
class LossConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True
    guided_fraction: float = 0.5  # tracker/refiner: match with the frozen stage's output before this


@dataclass
class CacheConfig:
    enabled: str = "auto"  # auto (when augmentation is off) | on | off
    dir: str | None = None  # default: OUTPUT_DIR/segmenter_cache
    dtype: str = "float16"  # float16 | float32 (mask features and mask logits)


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


@dataclass
class InitConfig:
    model: str | None = None  # our model folder (config.yaml + model.safetensors), e.g. a previous stage's
    release_checkpoint: str | None = None  # a released DVIS/MinVIS .pth for the segmenter (and tracker)


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "solver": SolverConfig, "loss": LossConfig, "cache": CacheConfig,
             "init": InitConfig, "validation": ValidationConfig}
_NESTED = {("data", "augmentation"): AugmentationConfig, ("data", "synthetic"): SyntheticConfig,
           ("validation", "synthetic"): SyntheticConfig, ("data", "pseudo_videos"): PseudoVideoConfig}


# ------------------------------------------------------------------------------------ key lists
def known_keys() -> list[str]:
    """Every dotted key a config may set (for error messages and close matches)."""
    keys = ["output_dir", "seed", "stage"]
    for name, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            nested = _NESTED.get((name, f.name))
            if nested is None:
                keys.append(f"{name}.{f.name}")
            else:
                keys.append(f"{name}.{f.name}")
                keys += [f"{name}.{f.name}.{g.name}" for g in dataclasses.fields(nested)]
    for name, cls in MODEL_SECTIONS.items():
        keys.append(f"model.{name}")
        keys += [f"model.{name}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def unknown_key_error(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, known_keys(), n=4, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(f"{source}: unknown config key {key!r}{hint}")


def _check_keys(values: dict, prefix: str, allowed: set[str], source: str) -> None:
    for key in values:
        if key not in allowed:
            raise unknown_key_error(f"{prefix}{key}", source)


# ---------------------------------------------------------------------------------- conversion
def _build(cls, values: Any, prefix: str, source: str):
    if values is None:
        return None
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.')} must be a mapping, got {values!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    _check_keys(values, prefix, names, source)
    kwargs = {}
    section = prefix.rstrip(".")
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        nested = _NESTED.get((section, f.name))
        value = values[f.name]
        kwargs[f.name] = _build(nested, value, f"{prefix}{f.name}.", source) if nested else _coerce(
            value, f, f"{prefix}{f.name}", source)
    return cls(**kwargs)


def _coerce(value: Any, f: dataclasses.Field, key: str, source: str) -> Any:
    kind = str(f.type)
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError(f"{source}: {key} must not be null")
    try:
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind.startswith("list[int]"):
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [int(v) for v in value]
        if kind.startswith("str"):
            if isinstance(value, bool):  # YAML reads unquoted on/off as booleans
                return "on" if value else "off"
            if not isinstance(value, (str, int, float)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} = {value!r} is not a valid {kind}") from None
    return value


def _check_model(model: Any, source: str) -> dict[str, Any]:
    if model is None:
        return {}
    if not isinstance(model, dict):
        raise ConfigError(f"{source}: 'model' must be a mapping with sections {sorted(MODEL_SECTIONS)}")
    _check_keys(model, "model.", set(MODEL_SECTIONS), source)
    for name, values in model.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: model.{name} must be a mapping")
        _check_keys(values, f"model.{name}.", {f.name for f in dataclasses.fields(MODEL_SECTIONS[name])}, source)
    return model


def train_config_from_dict(values: Any, source: str = "config") -> TrainConfig:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(values).__name__}")
    top = {"model", "output_dir", "seed", "stage", *_SECTIONS}
    _check_keys(values, "", top, source)
    if "data" not in values:
        raise ConfigError(f"{source}: missing section 'data'")
    kwargs: dict[str, Any] = {"model": _check_model(copy.deepcopy(values.get("model")), source)}
    for name, cls in _SECTIONS.items():
        if name in values:
            kwargs[name] = _build(cls, values[name] if values[name] is not None else {}, f"{name}.", source)
    if "output_dir" in values:
        kwargs["output_dir"] = str(values["output_dir"])
    if "seed" in values:
        kwargs["seed"] = _coerce(values["seed"], _field(TrainConfig, "seed"), "seed", source)
    if values.get("stage") is not None:
        if values["stage"] not in STAGES:
            raise ConfigError(f"{source}: stage = {values['stage']!r}; expected one of {STAGES}")
        kwargs["stage"] = values["stage"]
    config = TrainConfig(**kwargs)
    validate(config, source)
    return config


def _field(cls, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def validate(config: TrainConfig, source: str) -> None:
    s, data = config.solver, config.data
    checks = [
        (s.max_iter >= 1, f"solver.max_iter = {s.max_iter}: expected >= 1"),
        (s.batch_size >= 1 and s.clips_per_gpu >= 1, "solver.batch_size and solver.clips_per_gpu must be >= 1"),
        (s.amp in ("auto", "on", "off"), f"solver.amp = {s.amp!r}: expected auto, on or off"),
        (s.precision in ("fp32", "bf16"), f"solver.precision = {s.precision!r}: expected fp32 or bf16"),
        (s.find_unused_parameters in ("auto", "on", "off"), "solver.find_unused_parameters: expected auto, on or off"),
        (s.checkpoint_period >= 1 and s.log_period >= 1, "solver.checkpoint_period and log_period must be >= 1"),
        (data.format in DATA_FORMATS, f"data.format = {data.format!r}: expected one of {', '.join(DATA_FORMATS)}"),
        (data.num_frames >= 1, f"data.num_frames = {data.num_frames}: expected >= 1"),
        (config.cache.enabled in ("auto", "on", "off"), f"cache.enabled = {config.cache.enabled!r}: expected auto, on or off"),
        (config.cache.dtype in ("float16", "float32"), f"cache.dtype = {config.cache.dtype!r}: expected float16 or float32"),
        (config.loss.num_points >= 1, "loss.num_points must be >= 1"),
        (0.0 <= config.loss.importance_sample_ratio <= 1.0, "loss.importance_sample_ratio must be in [0, 1]"),
        (0.0 <= config.loss.guided_fraction <= 1.0, "loss.guided_fraction must be in [0, 1]"),
        (config.validation.period >= 1, f"validation.period = {config.validation.period}: expected >= 1"),
        (config.validation.mode in (None, "minvis", "online", "offline", "semi-online"),
         f"validation.mode = {config.validation.mode!r}: expected minvis, online, offline or semi-online"),
        (config.validation.metric in ("AP", "AP50", "AP75", "AP_light", "AP_medium", "AP_heavy"),
         f"validation.metric = {config.validation.metric!r}: expected AP, AP50, AP75, AP_light, AP_medium or AP_heavy"),
    ]
    for ok, message in checks + _pseudo_video_checks(data):
        if not ok:
            raise ConfigError(f"{source}: {message}")
    if data.pseudo_videos is not None:
        try:
            resolve_category_map(data.pseudo_videos.category_map, "data.pseudo_videos.category_map")
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None


def _pseudo_video_checks(data: DataConfig) -> list[tuple[bool, str]]:
    p = data.pseudo_videos
    if p is None:
        return []
    share = min(p.ratio, p.video_ratio) / max(p.ratio + p.video_ratio, 1e-30)
    return [
        (data.format == "ytvis", f"data.pseudo_videos needs data.format = 'ytvis' (got {data.format!r})"),
        (p.ratio > 0 and p.video_ratio > 0, f"data.pseudo_videos.ratio = {p.ratio} and video_ratio = "
                                            f"{p.video_ratio}: both must be > 0"),
        (share >= 1e-3, f"data.pseudo_videos.ratio : video_ratio = {p.ratio} : {p.video_ratio}: each share must be "
                        "at least 1/1000 (the mix is laid out in blocks of 1000 clips)"),
        (p.max_size is None or p.max_size >= 1, f"data.pseudo_videos.max_size = {p.max_size}: expected >= 1 or null"),
    ]


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
            raise unknown_key_error(key, "override")
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
