"""Load released DVIS checkpoints (detectron2 key names) into :class:`dvis.modeling.dvis.DVIS`.

A released file is a plain state dict or a detectron2 checkpoint dict with the weights under
``"model"``. Its keys are ``backbone.*`` and ``sem_seg_head.*`` (the segmenter, converted by
:mod:`dvis.compat.official`), ``tracker.*`` and ``refiner.*`` (same names as our modules), and
``criterion.empty_weight`` (a loss buffer, ignored). Every key must be consumed and every
parameter filled; otherwise :class:`CheckpointError` lists the missing and unexpected keys and says
which variant the file looks like.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dvis.compat.official import (
    IGNORED_PREFIXES,
    LEGACY_PREFIXES,
    REFINER_PREFIX,
    SEGMENTER_PREFIXES,
    TRACKER_PREFIX,
    convert_segmenter_state_dict,
)
from dvis.errors import CheckpointError
from dvis.modeling.io import check_finite, check_state_dict, mismatch_message


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file safely (never unpickles code) and unwrap ``model`` / ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the weights-only unpickler raises IndexError, struct.error, ...
        # on junk bytes; safetensors raises SafetensorError. Nothing ran (no code is unpickled).
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable weights-only checkpoint (torch.load(weights_only=True) or "
            f"safetensors): {first_line}"
        ) from None
    return unwrap_state_dict(raw, str(path))


def unwrap_state_dict(raw: object, source: str = "checkpoint") -> dict[str, Tensor]:
    if isinstance(raw, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(raw.get(wrapper), dict):
                raw = raw[wrapper]
                break
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(f"{source}: expected a state dict (name -> tensor), got {type(raw).__name__}")
    bad = [k for k, v in raw.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: entries that are not tensors: {bad[:5]}")
    state = {}
    for key, value in raw.items():
        for old, new in LEGACY_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        state[key] = value
    return state


@dataclass
class CheckpointInfo:
    """What a released state dict contains."""

    has_segmenter: bool
    has_tracker: bool
    has_refiner: bool
    backbone: str | None  # "resnet", "swin" or None

    @property
    def variant(self) -> str:
        if self.has_refiner:
            return "an offline checkpoint (segmenter + tracker + refiner)"
        if self.has_tracker:
            return "an online checkpoint (no refiner.*)"
        if self.has_segmenter:
            return "a segmenter-only (MinVIS / Mask2Former) checkpoint (no tracker.*)"
        return "not a DVIS checkpoint (no backbone.*, sem_seg_head.*, tracker.* or refiner.* keys)"


def describe(state: dict[str, Tensor]) -> CheckpointInfo:
    backbone = None
    if any(k.startswith("backbone.stem.") for k in state):
        backbone = "resnet"
    elif any(k.startswith("backbone.patch_embed.") for k in state):
        backbone = "swin"
    return CheckpointInfo(
        has_segmenter=any(k.startswith(SEGMENTER_PREFIXES) for k in state),
        has_tracker=any(k.startswith(TRACKER_PREFIX) for k in state),
        has_refiner=any(k.startswith(REFINER_PREFIX) for k in state),
        backbone=backbone,
    )


def _check_variant(model: nn.Module, info: CheckpointInfo, source: str) -> None:
    wants_refiner = model.refiner is not None
    wants_tracker = model.tracker is not None
    if wants_refiner and not info.has_refiner:
        hint = "use mode=online" if info.has_tracker else "use mode=minvis"
        raise CheckpointError(f"{source}: this is {info.variant}; the model expects refiner.* weights; {hint}")
    if wants_tracker and not info.has_tracker:
        raise CheckpointError(f"{source}: this is {info.variant}; the model expects tracker.* weights; use mode=minvis")
    if info.has_refiner and not wants_refiner:
        raise CheckpointError(
            f"{source}: this is {info.variant} but the model was built without a refiner; "
            "build it with an offline config (mode=offline or semi-online) to use these weights"
        )
    if info.has_tracker and not wants_tracker:
        raise CheckpointError(
            f"{source}: this is {info.variant} but the model was built without a tracker; "
            "build it with an online or offline config"
        )
    expected_backbone = model.config.segmenter.backbone
    if info.backbone is not None and info.backbone != expected_backbone:
        raise CheckpointError(
            f"{source}: the checkpoint has a {info.backbone} backbone but the model was built with "
            f"{expected_backbone}; use a {info.backbone} config/preset"
        )


def _load_module(module: nn.Module, state: dict[str, Tensor], prefix: str, source: str, assign: bool) -> None:
    check_state_dict(module.state_dict(), state, source, prefix)
    module.load_state_dict(state, strict=True, assign=assign)


def load_official(
    model: nn.Module, checkpoint: str | Path | dict, source: str | None = None, assign: bool = False
) -> CheckpointInfo:
    """Fill ``model`` (a :class:`DVIS`) from a released checkpoint file or state dict.

    ``assign=True`` replaces the model's tensors instead of copying into them (for a model built
    on the meta device).
    """
    if isinstance(checkpoint, dict):
        state = unwrap_state_dict(checkpoint, source or "checkpoint")
        source = source or "checkpoint"
    else:
        source = source or str(checkpoint)
        state = read_state_dict(checkpoint)
    check_finite(state, source)
    info = describe(state)
    _check_variant(model, info, source)
    parts: dict[str, dict[str, Tensor]] = {"segmenter": {}, TRACKER_PREFIX: {}, REFINER_PREFIX: {}}
    unknown = []
    for key, value in state.items():
        if key.startswith(SEGMENTER_PREFIXES):
            parts["segmenter"][key] = value
        elif key.startswith((TRACKER_PREFIX, REFINER_PREFIX)):
            prefix = key.split(".", 1)[0] + "."
            parts[prefix][key[len(prefix):]] = value
        elif not key.startswith(IGNORED_PREFIXES):
            unknown.append(key)
    if unknown:
        raise CheckpointError(mismatch_message(source, [], sorted(unknown), []))
    try:
        converted = convert_segmenter_state_dict(parts["segmenter"], model.config.segmenter)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from None
    model.segmenter.load_state_dict(converted, strict=True, assign=assign)
    if model.tracker is not None:
        _load_module(model.tracker, parts[TRACKER_PREFIX], TRACKER_PREFIX, source, assign)
    if model.refiner is not None:
        _load_module(model.refiner, parts[REFINER_PREFIX], REFINER_PREFIX, source, assign)
    return info
