"""Released (detectron2) config values -> this project's config dataclasses.

Accepts the flat dictionaries found with released checkpoints and goldens, in either spelling:
``{"TRACKER_DECODER_LAYERS": 6, "TEST_MAX_NUM": 20}`` or
``{"TRACKER.DECODER_LAYERS": 6, "MASK_FORMER.TEST.MAX_NUM": 20}``. Keys are normalised by replacing
dots with underscores and dropping the ``MODEL_``, ``MASK_FORMER_`` and ``SEM_SEG_HEAD_``
namespaces, so both resolve to ``TRACKER_DECODER_LAYERS`` / ``TEST_MAX_NUM``.

The segmenter part (:func:`segmenter_config_from_official`) maps the release's ``MASK_FORMER.*``,
``SEM_SEG_HEAD.*``, ``RESNETS.*`` and ``SWIN.*`` keys onto :class:`SegmenterConfig` fields and
refuses settings the release hard-codes differently; the tracker/refiner part
(:func:`tracker_config_from_release_kwargs`) maps the released constructor arguments.
All values go through :func:`dvis.config.from_dict`.
"""

from __future__ import annotations

import re
from typing import Any

from dvis.config import from_dict
from dvis.errors import ConfigError
from dvis.modeling.dvis import DVISConfig, InferenceConfig
from dvis.modeling.refiner import RefinerConfig
from dvis.modeling.segmenter import SegmenterConfig
from dvis.modeling.tracker import TrackerConfig

_NAMESPACES = ("MODEL_", "MASK_FORMER_", "SEM_SEG_HEAD_", "INPUT_")
_SOURCE = "released config"
_IN_FEATURES = ["res2", "res3", "res4", "res5"]
_DEFORM_IN_FEATURES = ["res3", "res4", "res5"]
_BACKBONE_NAMES = {"build_resnet_backbone": "resnet", "D2SwinTransformer": "swin"}


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
    return DVISConfig(segmenter_config_from_official(values), tracker, refiner, inference)


# ------------------------------------------------------------------------------------ segmenter
def segmenter_config_from_official(flat: dict[str, Any]) -> SegmenterConfig:
    """Build from a flat dict of the release's config values.

    Accepts the goldens' styles: ``NUM_CLASSES``/``RESNETS_DEPTH`` (segmenter and e2e goldens)
    and dotted ``SEM_SEG_HEAD.NUM_CLASSES``/``MASK_FORMER.HIDDEN_DIM``/``RESNETS.DEPTH``
    (layout inventories), with or without a ``MODEL.`` prefix.
    """
    values = _canonical_keys(flat)
    name = _require(values, "BACKBONE_NAME")
    if name not in _BACKBONE_NAMES:
        raise ConfigError(f"BACKBONE.NAME={name!r}: expected one of {sorted(_BACKBONE_NAMES)}")
    _check_fixed(values)
    fields: dict[str, Any] = {"backbone": _BACKBONE_NAMES[name]}
    for attr, key in _FIELD_KEYS.items():
        if key in values:
            fields[attr] = values[key]
        elif attr in _REQUIRED_FIELDS:
            raise ConfigError(f"segmenter config: missing key {key!r} (needed for {attr})")
    if fields["backbone"] == "resnet":
        _check_resnet_fixed(values)
    fields.update(_backbone_kwargs(values, fields["backbone"]))
    try:
        return from_dict(SegmenterConfig, fields, source=_SOURCE, prefix="segmenter.")
    except ConfigError as err:
        raise ConfigError(f"{err}{_release_names(str(err))}") from None


def _release_names(message: str) -> str:
    """`` (release key(s): RESNETS_DEPTH)`` for the SegmenterConfig fields named in ``message``."""
    keys = {**_FIELD_KEYS, **_RESNET_KEYS, **_SWIN_KEYS}
    named = [key for attr, key in keys.items() if re.search(rf"\b{attr}\b", message)]
    return f" (release key(s): {', '.join(named)})" if named else ""


_FIELD_KEYS = {  # SegmenterConfig attribute -> canonical key of the release's config
    "num_classes": "NUM_CLASSES",
    "hidden_dim": "HIDDEN_DIM",
    "mask_dim": "MASK_DIM",
    "convs_dim": "CONVS_DIM",
    "num_heads": "NHEADS",
    "dim_feedforward": "DIM_FEEDFORWARD",
    "dec_layers": "DEC_LAYERS",
    "num_queries": "NUM_OBJECT_QUERIES",
    "enc_layers": "TRANSFORMER_ENC_LAYERS",
    "enc_dim_feedforward": "PIXEL_DECODER_ENC_DIM_FEEDFORWARD",
    "enforce_input_proj": "ENFORCE_INPUT_PROJ",
    "pixel_mean": "PIXEL_MEAN",
    "pixel_std": "PIXEL_STD",
    "size_divisibility": "SIZE_DIVISIBILITY",
}
_REQUIRED_FIELDS = {"num_classes", "hidden_dim", "mask_dim", "convs_dim", "num_heads",
                    "dim_feedforward", "dec_layers", "num_queries", "enc_layers"}
_RESNET_KEYS = {
    "resnet_depth": "RESNETS_DEPTH",
    "resnet_stem_out_channels": "RESNETS_STEM_OUT_CHANNELS",
    "resnet_res2_out_channels": "RESNETS_RES2_OUT_CHANNELS",
    "resnet_num_groups": "RESNETS_NUM_GROUPS",
    "resnet_width_per_group": "RESNETS_WIDTH_PER_GROUP",
    "resnet_stride_in_1x1": "RESNETS_STRIDE_IN_1X1",
}
_SWIN_KEYS = {
    "swin_embed_dim": "SWIN_EMBED_DIM",
    "swin_depths": "SWIN_DEPTHS",
    "swin_num_heads": "SWIN_NUM_HEADS",
    "swin_window_size": "SWIN_WINDOW_SIZE",
    "swin_patch_size": "SWIN_PATCH_SIZE",
    "swin_mlp_ratio": "SWIN_MLP_RATIO",
    "swin_qkv_bias": "SWIN_QKV_BIAS",
    "swin_ape": "SWIN_APE",
    "swin_patch_norm": "SWIN_PATCH_NORM",
    "swin_pretrain_img_size": "SWIN_PRETRAIN_IMG_SIZE",
    "swin_drop_path_rate": "SWIN_DROP_PATH_RATE",
}
_REQUIRED_BACKBONE = {"resnet": {"resnet_depth", "resnet_stem_out_channels", "resnet_res2_out_channels"},
                      "swin": {"swin_embed_dim", "swin_depths", "swin_num_heads", "swin_window_size"}}


_ALIASES = {  # layout-inventory spellings of values the release hard-codes
    "pixel_decoder_encoder_dim_feedforward": "PIXEL_DECODER_ENC_DIM_FEEDFORWARD",
    "pixel_decoder_encoder_n_points": "PIXEL_DECODER_ENC_N_POINTS",
}


def _canonical_keys(flat: dict[str, Any]) -> dict[str, Any]:
    """Map every key style to one: strip ``MODEL.``, ``SEM_SEG_HEAD.``, ``MASK_FORMER.``; '.' -> '_'."""
    if not isinstance(flat, dict):
        raise ConfigError(f"segmenter config: expected a flat dict of values, got {type(flat).__name__}")
    values: dict[str, Any] = {}
    for key, value in flat.items():
        canon = str(key).split(" ", 1)[0]
        for prefix in ("MODEL.", "SEM_SEG_HEAD.", "MASK_FORMER."):
            if canon.startswith(prefix):
                canon = canon[len(prefix):]
        canon = _ALIASES.get(canon, canon.replace(".", "_"))
        if canon in values and values[canon] != value:
            raise ConfigError(f"segmenter config: {key!r} = {value!r} contradicts another key for {canon} = {values[canon]!r}")
        values[canon] = value
    return values


def _require(values: dict[str, Any], key: str) -> Any:
    if key not in values:
        raise ConfigError(f"segmenter config: missing key {key!r}")
    return values[key]


def _check_fixed(values: dict[str, Any]) -> None:
    """Settings the release (and this adapter) hard-code; refuse configs that change them."""
    fixed = {"IN_FEATURES": _IN_FEATURES, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": _DEFORM_IN_FEATURES,
             "COMMON_STRIDE": 4, "PRE_NORM": False, "PIXEL_DECODER_ENC_N_POINTS": 4}
    for key, expected in fixed.items():
        if key in values and values[key] != expected:
            raise ConfigError(f"segmenter config {key}={values[key]!r}: only {expected!r} is supported")
    if "PIXEL_DECODER_ENC_NHEADS" in values and "NHEADS" in values and values["PIXEL_DECODER_ENC_NHEADS"] != values["NHEADS"]:
        raise ConfigError("segmenter config PIXEL_DECODER_ENC_NHEADS must equal MASK_FORMER.NHEADS (as in the release)")
    for key in ("SEM_SEG_HEAD_NORM", "NORM"):
        if key in values and values[key] != "GN":
            raise ConfigError(f"segmenter config SEM_SEG_HEAD.NORM={values[key]!r}: only 'GN' is supported")


def _check_resnet_fixed(values: dict[str, Any]) -> None:
    fixed = {"RESNETS_NORM": "FrozenBN", "RESNETS_RES5_DILATION": 1, "RESNETS_OUT_FEATURES": _IN_FEATURES,
             "RESNETS_DEFORM_ON_PER_STAGE": [False] * 4}
    for key, expected in fixed.items():
        if key in values and values[key] != expected:
            raise ConfigError(f"segmenter config {key}={values[key]!r}: only {expected!r} is supported")


def _backbone_kwargs(values: dict[str, Any], backbone: str) -> dict[str, Any]:
    keys = _RESNET_KEYS if backbone == "resnet" else _SWIN_KEYS
    kwargs = {}
    for attr, key in keys.items():
        if key in values:
            kwargs[attr] = values[key]
        elif attr in _REQUIRED_BACKBONE[backbone]:
            raise ConfigError(f"segmenter config: missing key {key!r} (needed for {attr})")
    return kwargs


# ------------------------------------------------------------------------------ tracker / refiner
def release_kwargs(kwargs: dict) -> dict:
    """Released tracker/refiner constructor argument names -> our config field names."""
    return dict(
        num_classes=int(kwargs["class_num"]),
        hidden_dim=int(kwargs["hidden_channel"]),
        feedforward_dim=int(kwargs["feedforward_channel"]),
        num_heads=int(kwargs["num_head"]),
        num_layers=int(kwargs["decoder_layer_num"]),
        mask_dim=int(kwargs["mask_dim"]),
    )


def tracker_config_from_release_kwargs(kwargs: dict) -> TrackerConfig:
    """From the released tracker's constructor arguments (``hidden_channel``, ``num_head``, ...)."""
    values = {**release_kwargs(kwargs), "matching": kwargs.get("matching", "dvis-release")}
    return from_dict(TrackerConfig, values, source="released tracker arguments")


def refiner_config_from_release_kwargs(kwargs: dict) -> RefinerConfig:
    """From the released refiner's constructor arguments (``hidden_channel``, ``num_head``, ...)."""
    return from_dict(RefinerConfig, release_kwargs(kwargs), source="released refiner arguments")
