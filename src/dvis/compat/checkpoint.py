"""Load released DVIS checkpoints (detectron2 key names) into :class:`dvis.modeling.dvis.DVIS`.

A released file is a plain state dict or a detectron2 checkpoint dict with the weights under
``"model"``: a ``.pth`` (read with ``torch.load(weights_only=True)``), a ``.safetensors``, or a
detectron2 model-zoo ``.pkl`` of numpy arrays (read by :mod:`dvis.compat.detectron2_pickle`, which
refuses every global that is not part of a numpy array). Its keys are ``backbone.*`` and
``sem_seg_head.*`` (the segmenter, converted by :mod:`dvis.compat.official`), ``tracker.*`` and
``refiner.*`` (same names as our modules), and ``criterion.empty_weight`` (a loss buffer, ignored).
Every key must be consumed and every parameter filled; otherwise one :class:`CheckpointError`
says which variant the file is (online / offline / segmenter-only, and its backbone), what to do,
and lists the missing, unexpected and misshaped keys of all parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dvis.compat.detectron2_pickle import read_detectron2_pickle
from dvis.compat.official import (
    IGNORED_PREFIXES,
    LEGACY_PREFIXES,
    REFINER_PREFIX,
    SEGMENTER_PREFIXES,
    TRACKER_PREFIX,
    KeyReport,
    backbone_name,
    backbone_name_from_keys,
    check_segmenter_state_dict,
)
from dvis.errors import CheckpointError
from dvis.modeling.io import check_finite, load_failure

PER_PART_LISTED = 10  # keys listed per part (backbone.*, tracker.*, ...) and kind of problem
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format, whatever the file is called


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file safely (never unpickles code) and unwrap ``model`` / ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".pkl" and not _is_zip(path):
        return unwrap_state_dict(read_detectron2_pickle(path), str(path))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the weights-only unpickler raises IndexError, struct.error, ...
        # on junk bytes; safetensors raises SafetensorError. Nothing ran (no code is unpickled).
        raise CheckpointError(
            f"{path}: not a readable weights-only checkpoint (torch.load(weights_only=True) or "
            f"safetensors): {load_failure(err, path)}"
        ) from None
    return unwrap_state_dict(raw, str(path))


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC


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
    backbone_name: str | None = None  # "ResNet-50", "Swin-L", ... (see dvis.compat.official.backbone_name)

    @property
    def variant(self) -> str:
        if not self.has_segmenter and (self.has_tracker or self.has_refiner):
            found = (("tracker.*", self.has_tracker), ("refiner.*", self.has_refiner))
            parts = " + ".join(part for part, has in found if has)
            return f"a partial checkpoint ({parts} only, no backbone.* / sem_seg_head.*)"
        if self.has_refiner:
            return "an offline checkpoint (segmenter + tracker + refiner)"
        if self.has_tracker:
            return "an online checkpoint (no refiner.*)"
        if self.has_segmenter:
            return "a segmenter-only (MinVIS / Mask2Former) checkpoint (no tracker.*)"
        return "not a DVIS checkpoint (no backbone.*, sem_seg_head.*, tracker.* or refiner.* keys)"

    @property
    def summary(self) -> str:
        return f"{self.variant}, {self.backbone_name} backbone" if self.backbone_name else self.variant


def describe(state: dict[str, Tensor]) -> CheckpointInfo:
    """Which parts and which backbone a release-named state dict holds (shapes only: meta tensors work)."""
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
        backbone_name=backbone_name_from_keys(state),
    )


def model_summary(model: nn.Module) -> str:
    """``an offline model (segmenter + tracker + refiner), ResNet-50 backbone`` etc."""
    if model.refiner is not None:
        kind = "an offline model (segmenter + tracker + refiner)"
    elif model.tracker is not None:
        kind = "an online model (segmenter + tracker)"
    else:
        kind = "a segmenter-only (MinVIS) model"
    return f"{kind}, {backbone_name(model.config.segmenter)} backbone"


def variant_hints(model: nn.Module, info: CheckpointInfo) -> list[str]:
    """What to do when the file is another variant than the model (empty when they agree)."""
    hints = []
    if model.refiner is not None and not info.has_refiner:
        use = "use mode=online" if info.has_tracker else "use mode=minvis"
        hints.append(f"the model expects refiner.* weights; {use} (build the model from that config)")
    elif model.tracker is not None and not info.has_tracker and not info.has_refiner:
        hints.append("the model expects tracker.* weights; use mode=minvis (build a segmenter-only model)")
    if info.has_refiner and model.refiner is None:
        hints.append("the model was built without a refiner; build it with an offline config "
                     "(mode=offline or semi-online) to use these weights")
    elif info.has_tracker and model.tracker is None:
        hints.append("the model was built without a tracker; build it with an online or offline config")
    expected = backbone_name(model.config.segmenter)
    if info.backbone_name is not None and info.backbone_name != expected:
        hints.append(f"the checkpoint has a {info.backbone_name} backbone but the model was built with "
                     f"{expected}; use a {info.backbone_name} config/preset")
    return hints


def split_parts(state: dict[str, Tensor]) -> tuple[dict[str, dict[str, Tensor]], list[str]]:
    """Release state dict -> {"segmenter": release-named, "tracker.": .., "refiner.": ..} (the last two
    without their prefix) and the keys that belong to no part."""
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
    return parts, unknown


def module_report(module: nn.Module | None, state: dict[str, Tensor], prefix: str) -> KeyReport:
    """Missing, unexpected and misshaped keys of ``state`` for ``module`` (None: every key is unexpected)."""
    report = KeyReport()
    expected = module.state_dict() if module is not None else {}
    report.missing = [prefix + k for k in expected if k not in state]
    report.unexpected = [prefix + k for k in state if k not in expected]
    for key, value in state.items():
        if key not in expected:
            continue
        want = expected[key]
        if value.shape != want.shape:
            report.mismatched.append(f"{prefix}{key}: expected {tuple(want.shape)}, found {tuple(value.shape)}")
        elif want.is_floating_point() and not value.is_floating_point():
            report.mismatched.append(f"{prefix}{key}: expected a floating-point tensor, found {value.dtype}")
    return report


def fit_report(model: nn.Module, parts: dict[str, dict[str, Tensor]],
               unknown: list[str]) -> tuple[dict[str, Tensor], KeyReport]:
    """The converted segmenter state dict and every problem of all parts, in one report."""
    converted, report = check_segmenter_state_dict(parts["segmenter"], model.config.segmenter)
    report.extend(module_report(model.tracker, parts[TRACKER_PREFIX], TRACKER_PREFIX))
    report.extend(module_report(model.refiner, parts[REFINER_PREFIX], REFINER_PREFIX))
    report.unexpected.extend(unknown)
    return converted, report


def mismatch_error(source: str, info: CheckpointInfo, model: nn.Module, report: KeyReport) -> CheckpointError:
    """``<file>: this is <variant>, <backbone> backbone; <hints>`` + the model + the listed keys."""
    head = "; ".join([f"{source}: this is {info.summary}", *variant_hints(model, info)])
    return CheckpointError(f"{head}\n  the model is {model_summary(model)}; the checkpoint does not fit it:"
                           + report.listing(PER_PART_LISTED))


def load_official(
    model: nn.Module, checkpoint: str | Path | dict, source: str | None = None, assign: bool = False
) -> CheckpointInfo:
    """Fill ``model`` (a :class:`DVIS`) from a released checkpoint file or state dict.

    Nothing is loaded unless everything fits. ``assign=True`` replaces the model's tensors instead
    of copying into them (for a model built on the meta device).
    """
    if isinstance(checkpoint, dict):
        source = source or "checkpoint"
        state = unwrap_state_dict(checkpoint, source)
    else:
        source = source or str(checkpoint)
        state = read_state_dict(checkpoint)
    check_finite(state, source)
    info = describe(state)
    parts, unknown = split_parts(state)
    converted, report = fit_report(model, parts, unknown)
    if report or variant_hints(model, info):
        raise mismatch_error(source, info, model, report)
    model.segmenter.load_state_dict(converted, strict=True, assign=assign)
    for prefix, module in ((TRACKER_PREFIX, model.tracker), (REFINER_PREFIX, model.refiner)):
        if module is not None:
            module.load_state_dict(parts[prefix], strict=True, assign=assign)
    return info
