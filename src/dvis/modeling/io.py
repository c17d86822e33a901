"""The project's own model format: a folder with ``config.yaml`` and ``model.safetensors``.

``config.yaml`` holds the :class:`DVISConfig` as nested plain data (``segmenter``, ``tracker``,
``refiner``, ``inference``; ``tracker``/``refiner`` may be null). ``model.safetensors`` holds the
state dict under our own names (no pickle: loading never executes code). Unknown config keys are
an error that names them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file, save_file

from dvis.errors import CheckpointError, ConfigError
from dvis.modeling.dvis import DVIS, DVISConfig, InferenceConfig
from dvis.modeling.refiner import RefinerConfig
from dvis.modeling.segmenter import SegmenterConfig
from dvis.modeling.tracker import TrackerConfig

CONFIG_FILE, WEIGHTS_FILE = "config.yaml", "model.safetensors"
_SECTIONS = {"segmenter": SegmenterConfig, "tracker": TrackerConfig, "refiner": RefinerConfig, "inference": InferenceConfig}


def config_to_dict(config: DVISConfig) -> dict[str, Any]:
    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return {
        name: None if getattr(config, name) is None else {k: plain(v) for k, v in dataclasses.asdict(getattr(config, name)).items()}
        for name in _SECTIONS
    }


def _section(cls, values: dict | None, name: str, source: str):
    if values is None:
        return None
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section {name!r} must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in {name!r}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def config_from_dict(values: dict[str, Any], source: str = "config") -> DVISConfig:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping with sections {sorted(_SECTIONS)}")
    unknown = sorted(set(values) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; expected {sorted(_SECTIONS)}")
    if values.get("segmenter") is None:
        raise ConfigError(f"{source}: the 'segmenter' section is required")
    sections = {name: _section(cls, values.get(name), name, source) for name, cls in _SECTIONS.items()}
    if sections["inference"] is None:
        sections["inference"] = InferenceConfig()
    return DVISConfig(**sections)


def load_config(path: str | Path) -> DVISConfig:
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    return config_from_dict(values, str(path))


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the result over ``path`` (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(model: DVIS, directory: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Write ``config.yaml`` + ``model.safetensors`` (+ ``extra_files`` name -> text) atomically."""
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, str(p)))
    text = yaml.safe_dump(config_to_dict(model.config), sort_keys=False)
    atomic_write(directory / CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    for name, content in (extra_files or {}).items():
        atomic_write(directory / name, lambda p, c=content: p.write_text(c, encoding="utf-8"))
    return directory


def load_pretrained(directory: str | Path, **inference_overrides) -> DVIS:
    """Build the model from ``config.yaml`` and fill it from ``model.safetensors`` (strict)."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: missing {name} (a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = load_config(directory / CONFIG_FILE)
    if inference_overrides:
        config.inference = dataclasses.replace(config.inference, **inference_overrides)
    model = DVIS(config)
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: not a readable safetensors file: {err}") from None
    check_state_dict(model.state_dict(), state, str(directory / WEIGHTS_FILE))
    model.load_state_dict(state, strict=True)
    return model.eval()


def check_state_dict(expected: dict, state: dict, source: str, prefix: str = "") -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and misshaped keys, if any."""
    missing = sorted(prefix + k for k in expected.keys() - state.keys())
    unexpected = sorted(prefix + k for k in state.keys() - expected.keys())
    wrong = [
        f"{prefix}{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(mismatch_message(source, missing, unexpected, wrong))


def mismatch_message(source: str, missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    def listing(title: str, items: list[str]) -> str:
        shown = "\n    ".join(items[:20])
        more = f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
        return f"\n  {title} ({len(items)}):\n    {shown}{more}" if items else ""

    return (
        f"{source}: checkpoint does not fit the model"
        + listing("missing keys", missing)
        + listing("unexpected keys", unexpected)
        + listing("shape mismatches", wrong)
    )
