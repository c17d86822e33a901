"""Build the model a stage trains and fill it from the previous stage.

Stage models: ``segmenter`` -> segmenter only; ``tracker`` -> segmenter + tracker;
``refiner`` -> segmenter + tracker + refiner. Sections missing from the training config's
``model`` are taken from ``init.model`` (the previous stage's exported folder), so a tracker
config need not repeat the segmenter. A section given in both must be equal for the frozen parts.

Weights: ``init.model`` (our folder format) fills every part it has; ``init.release_checkpoint``
(a released DVIS/MinVIS .pth) fills the segmenter and, if present, the tracker. The tracker stage
needs a trained segmenter and the refiner stage a trained tracker: a folder from an earlier stage
is a :class:`CheckpointError` that says which stage it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dvis.config import from_dict, to_dict
from dvis.errors import CheckpointError, ConfigError
from dvis.modeling.dvis import DVIS
from dvis.modeling.io import CONFIG_FILE, WEIGHTS_FILE, check_state_dict, config_from_dict, config_to_dict, load_config
from dvis.training.config import MODEL_SECTIONS, TrainConfig

PARTS = {"segmenter": ("segmenter",), "tracker": ("segmenter", "tracker"),
         "refiner": ("segmenter", "tracker", "refiner")}
FROZEN = {"segmenter": (), "tracker": ("segmenter",), "refiner": ("segmenter", "tracker")}


def stage_of(config_sections: dict[str, Any]) -> str:
    """Which stage produced a model folder with these config sections."""
    if config_sections.get("refiner") is not None:
        return "refiner"
    return "tracker" if config_sections.get("tracker") is not None else "segmenter"


def _check_stage(sections: dict[str, Any], stage: str, folder: Path) -> None:
    """The init model must hold every part the stage freezes."""
    missing = [part for part in FROZEN[stage] if sections.get(part) is None]
    if missing:
        raise CheckpointError(
            f"init.model = {folder} is a {stage_of(sections)}-stage model (it has no {', '.join(missing)}); "
            f"the {stage} stage needs the output of the {FROZEN[stage][-1]} stage")


def _init_sections(config: TrainConfig) -> dict[str, Any] | None:
    if config.init.model is None:
        return None
    folder = Path(config.init.model)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"init.model = {folder}: missing {name} (expected a model folder written by "
                                  "`dvis train` or save_pretrained)")
    return config_to_dict(load_config(folder / CONFIG_FILE))


def model_sections(config: TrainConfig, stage: str) -> dict[str, Any]:
    """The DVISConfig sections of the stage model (training config first, then init.model)."""
    from_init = _init_sections(config) or {}
    if from_init:
        _check_stage(from_init, stage, Path(config.init.model))
    sections: dict[str, Any] = {}
    for part in PARTS[stage]:
        given, inherited = config.model.get(part), from_init.get(part)
        if given is None and inherited is None:
            raise ConfigError(f"model.{part} is not set and init.model does not provide it "
                              f"(the {stage} stage needs {', '.join(PARTS[stage])})")
        if given is not None and inherited is not None and part in FROZEN[stage]:
            full = _normalised(part, given)
            diff = sorted(k for k in full if full[k] != inherited.get(k))
            if diff:
                raise ConfigError(f"model.{part} differs from init.model's {part} in {', '.join(diff)}; "
                                  f"the frozen {part} must be the trained one (drop model.{part} to inherit it)")
        sections[part] = given if given is not None else inherited
    sections["inference"] = config.model.get("inference") or from_init.get("inference")
    return sections


def _normalised(part: str, values: dict[str, Any]) -> dict[str, Any]:
    """A model section with every default filled in, as config_to_dict writes it."""
    return to_dict(from_dict(MODEL_SECTIONS[part], values, source="training config", prefix=f"model.{part}."))


def build_stage_model(config: TrainConfig, stage: str) -> DVIS:
    sections = model_sections(config, stage)
    model = DVIS(config_from_dict(sections, "model"))
    loaded = set()
    if config.init.release_checkpoint is not None:
        loaded |= _load_release(model, config.init.release_checkpoint)
    if config.init.model is not None:
        loaded |= _load_folder(model, Path(config.init.model), stage)
    missing = [part for part in FROZEN[stage] if part not in loaded]
    if missing:
        raise ConfigError(f"the {stage} stage trains on a frozen, trained {' and '.join(missing)}: set init.model "
                          f"to the {'tracker' if 'tracker' in missing else 'segmenter'} stage's output folder "
                          "(or init.release_checkpoint to a released checkpoint)")
    return model


def _load_folder(model: DVIS, folder: Path, stage: str) -> set[str]:
    from safetensors.torch import load_file

    _check_stage(config_to_dict(load_config(folder / CONFIG_FILE)), stage, folder)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except Exception as err:  # safetensors raises its own types
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: not a readable safetensors file: {err}") from None
    loaded = set()
    for part in PARTS[stage]:
        module = getattr(model, part)
        prefix = f"{part}."
        part_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not part_state:
            continue
        check_state_dict(module.state_dict(), part_state, str(folder / WEIGHTS_FILE), prefix)
        module.load_state_dict(part_state, strict=True)
        loaded.add(part)
    return loaded


def _load_release(model: DVIS, path: str) -> set[str]:
    from dvis.compat.checkpoint import read_state_dict
    from dvis.compat.official import SEGMENTER_PREFIXES, TRACKER_PREFIX, convert_segmenter_state_dict

    state = read_state_dict(path)
    segmenter = {k: v for k, v in state.items() if k.startswith(SEGMENTER_PREFIXES)}
    if not segmenter:
        raise CheckpointError(f"init.release_checkpoint = {path}: no segmenter weights (backbone.*, sem_seg_head.*)")
    model.segmenter.load_state_dict(convert_segmenter_state_dict(segmenter, model.config.segmenter), strict=True)
    loaded = {"segmenter"}
    tracker = {k[len(TRACKER_PREFIX):]: v for k, v in state.items() if k.startswith(TRACKER_PREFIX)}
    if tracker and model.tracker is not None:
        check_state_dict(model.tracker.state_dict(), tracker, path, TRACKER_PREFIX)
        model.tracker.load_state_dict(tracker, strict=True)
        loaded.add("tracker")
    return loaded
