"""The project's own model format: a folder with ``config.yaml`` and ``model.safetensors``.

``config.yaml`` holds the :class:`DVISConfig` as nested plain data (``segmenter``, ``tracker``,
``refiner``, ``inference``; ``tracker``/``refiner`` may be null). ``model.safetensors`` holds the
state dict under our own names (no pickle: loading never executes code). Unknown config keys are
an error that names them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dvis.config import from_dict, to_dict
from dvis.errors import CheckpointError, ConfigError, DVISError
from dvis.fileio import atomic_write
from dvis.modeling.dvis import DVIS, DVISConfig

CONFIG_FILE, WEIGHTS_FILE = "config.yaml", "model.safetensors"


def config_to_dict(config: DVISConfig) -> dict[str, Any]:
    """The config as plain data (tuples as lists; ``tracker``/``refiner`` may be None)."""
    return to_dict(config)


def config_from_dict(values: dict[str, Any], source: str = "config") -> DVISConfig:
    """A DVISConfig from plain data (:func:`dvis.config.from_dict`; errors name ``source``)."""
    return from_dict(DVISConfig, values, source=source)


def _named(err: Exception, source: str) -> DVISError:
    """The same typed error with ``source`` (file, section) in front; others become ConfigError."""
    kind = type(err) if isinstance(err, DVISError) else ConfigError
    return kind(f"{source}: {err}")


def load_config(path: str | Path) -> DVISConfig:
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))  # safe: no python/* tags
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    return config_from_dict(values, str(path))


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` that reports a failed write (disk full) as the OSError it is,
    not as a ``SafetensorError`` "I/O error: ... (os error 28)"."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        code = re.search(r"\(os error (\d+)\)", str(err))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def save_pretrained(model: DVIS, directory: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Write ``config.yaml`` + ``model.safetensors`` (+ ``extra_files`` name -> text) atomically."""
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_safetensors(state, p))
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
        try:
            config.inference = dataclasses.replace(config.inference, **inference_overrides)
        except TypeError as err:
            raise ConfigError(f"inference overrides {sorted(inference_overrides)}: {err}") from None
    weights = directory / WEIGHTS_FILE
    # Check the file's names and shapes against a model built on the meta device first, so that a
    # junk config (hidden_dim: 10**6) is refused before any memory is allocated for it.
    check_state_dict(_build(config, directory / CONFIG_FILE, meta=True).state_dict(), _header(weights), str(weights))
    model = _build(config, directory / CONFIG_FILE)
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{weights}: not a readable safetensors file: {err}") from None
    check_state_dict(model.state_dict(), state, str(weights))
    check_finite(state, str(weights))
    model.load_state_dict(state, strict=True)
    return model.eval()


def _build(config: DVISConfig, source: Path, meta: bool = False) -> DVIS:
    try:
        if meta:
            with torch.device("meta"):
                return DVIS(config)
        return DVIS(config)
    except (AssertionError, TypeError, ValueError, RuntimeError, DVISError) as err:
        if isinstance(err, DVISError):
            raise _named(err, str(source)) from None
        raise ConfigError(f"{source}: the config does not describe a buildable model: {err}") from None


def _header(path: Path) -> dict:
    """name -> meta tensor of the file's dtype and shape (reads only the safetensors header)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: torch.empty(handle.get_slice(name).get_shape(),
                                      dtype=_DTYPES.get(handle.get_slice(name).get_dtype(), torch.uint8),
                                      device="meta")
                    for name in handle.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from None


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def load_failure(err: BaseException, path: Path) -> str:
    """Why ``torch.load`` (weights-only) or safetensors could not read ``path``, in one line; never
    PyTorch's advice to retry with ``weights_only=False`` (that would run code from the file)."""
    try:
        if Path(path).stat().st_size == 0:
            return "the file is empty (0 bytes)"
    except OSError:
        pass
    text = str(err)
    if "Weights only load failed" in text:
        name = re.search(r"GLOBAL ([\w.]+)", text)
        held = f"the Python object {name.group(1)}" if name else "Python objects other than tensors and numbers"
        return f"it holds {held}, which a weights-only load refuses (dvis never runs code from a weights file)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def non_finite(state: dict) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold NaN or infinite values."""
    return [name for name, value in state.items()  # meta tensors (shape-only checks) hold no values
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.device.type != "meta"
            and not bool(torch.isfinite(value).all())]


def check_finite(state: dict, source: str) -> None:
    """Raise :class:`CheckpointError` naming the tensors that hold NaN or infinite values."""
    bad = non_finite(state)
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise CheckpointError(f"{source}: {len(bad)} tensor(s) hold NaN or infinite values: {shown}")


def check_state_dict(expected: dict, state: dict, source: str, prefix: str = "") -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and misshaped keys, if any."""
    missing = sorted(prefix + k for k in expected.keys() - state.keys())
    unexpected = sorted(prefix + k for k in state.keys() - expected.keys())
    wrong = [
        f"{prefix}{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ] + [
        f"{prefix}{k}: checkpoint dtype {v.dtype} vs model {expected[k].dtype} (not a floating-point tensor)"
        for k, v in state.items()
        if k in expected and expected[k].is_floating_point() and not v.is_floating_point()
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
