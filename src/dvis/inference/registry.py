"""Model names -> loaded :class:`DVIS` models.

``load_model(NAME_OR_DIR, weights=None, device="auto", **overrides)`` accepts:

* a folder in our format (``config.yaml`` + ``model.safetensors``, :mod:`dvis.modeling.io`);
* a registered name (:data:`REGISTERED`, e.g. ``synthetic-demo``): a model folder shipped inside
  the package under ``dvis/models/<name>/``;
* a release preset name (:mod:`dvis.compat.presets`, e.g. ``dvis-offline-ovis-r50``) together
  with ``weights=FILE.pth``, a released detectron2-format checkpoint.

``overrides`` are :class:`~dvis.modeling.dvis.InferenceConfig` fields (mode, task, clip_len, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from dvis.errors import CheckpointError, ConfigError, InputError
from dvis.modeling.dvis import DVIS, InferenceConfig

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
# name -> folder under MODELS_DIR; registered even before its weights are installed
REGISTERED: dict[str, str] = {"synthetic-demo": "synthetic-demo"}


def registered_folder(name: str) -> Path:
    return MODELS_DIR / REGISTERED[name]


def preset_names() -> list[str]:
    try:
        from dvis.compat.presets import PRESETS
    except ImportError:  # presets not available in this build
        return []
    return sorted(PRESETS)


DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` -> torch.device;
    InputError for another name or a device this machine does not have."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise InputError(f"device {name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device {str(device)!r} requested but this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {str(device)!r} requested but MPS is not available; use --device cpu or auto")
    return device


def check_overrides(overrides: dict) -> dict:
    """Drop None values; reject names that are not InferenceConfig fields."""
    known = {f.name for f in dataclasses.fields(InferenceConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"unknown inference option(s) {unknown}; known: {sorted(known)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}


def _available() -> str:
    names = [f"{n} (not installed)" if not (registered_folder(n) / "config.yaml").is_file() else n
             for n in sorted(REGISTERED)]
    presets = preset_names()
    text = f"registered models: {', '.join(names) or 'none'}"
    if presets:
        text += f"; release presets (with --weights FILE.pth): {', '.join(presets)}"
    return text


@dataclass(frozen=True)
class ModelRef:
    """What a model name refers to. ``kind``: ``"folder"`` (our format), ``"registered"`` (a folder
    shipped in the package) or ``"preset"`` (a release config + a released checkpoint)."""

    name: str
    kind: str
    folder: Path | None
    weights: Path | None

    def files(self) -> list[Path]:
        """The files that define the model (config, weights, classes), those that exist."""
        names = MODEL_FILES if self.folder is not None else ()
        found = [self.folder / n for n in names if (self.folder / n).is_file()]
        return found + ([self.weights] if self.weights is not None else [])


MODEL_FILES = ("config.yaml", "model.safetensors", "classes.json")  # of a model folder


def locate_model(name_or_dir: str | Path, weights: str | Path | None = None) -> ModelRef:
    """Resolve a model name without loading it; raises what :func:`load_model` would for a bad name
    (unknown, not installed, preset without weights, missing weights file)."""
    name, path = str(name_or_dir), Path(name_or_dir)
    weights = None if weights is None else Path(weights)
    if path.is_dir():
        ref = ModelRef(name, "folder", path, weights)
    elif name in REGISTERED:
        ref = _registered(name, weights)
    elif name in preset_names():
        ref = _preset(name, weights)
    elif path.suffix or "/" in name or path.exists():
        raise CheckpointError(f"model {name!r}: not a model folder (expected a folder with config.yaml and "
                              f"model.safetensors). {_available()}")
    else:
        raise ConfigError(f"unknown model {name!r}. {_available()}")
    if ref.weights is not None and not ref.weights.is_file():
        raise CheckpointError(f"weights file {ref.weights} does not exist"
                              + (f" (needed for release preset {name!r})" if ref.kind == "preset" else ""))
    return ref


def _registered(name: str, weights: Path | None) -> ModelRef:
    folder = registered_folder(name)
    if not (folder / "config.yaml").is_file():
        raise CheckpointError(f"model {name!r} is registered but not installed: {folder} holds no "
                              f"config.yaml/model.safetensors. {_available()}")
    if weights is not None:
        raise InputError(f"--weights is for release presets; {name!r} ships its own weights")
    return ModelRef(name, "registered", folder, None)


def _preset(name: str, weights: Path | None) -> ModelRef:
    if weights is None:
        raise InputError(f"model {name!r} is a release preset: pass the downloaded checkpoint with "
                         f"--weights FILE.pth (weights=... in Python)")
    return ModelRef(name, "preset", None, weights)


def load_model(name_or_dir: str | Path, weights: str | Path | None = None, device: str = "auto",
               **overrides) -> DVIS:
    """Build and load a model (see the module docstring); returns it in eval mode on ``device``."""
    overrides = check_overrides(overrides)
    target = resolve_device(device)
    model = _build(locate_model(name_or_dir, weights), overrides)
    return model.to(target).eval()


def _build(ref: ModelRef, overrides: dict) -> DVIS:
    from dvis.modeling.io import load_pretrained

    if ref.kind == "preset":
        return _from_preset(ref.name, ref.weights, overrides)
    model = load_pretrained(ref.folder, **overrides)
    if ref.weights is not None:
        _load_release_weights(model, ref.weights)
    return model


def _from_preset(name: str, weights: Path, overrides: dict) -> DVIS:
    from dvis.compat.presets import build_config

    config = build_config(name)
    config.inference = dataclasses.replace(config.inference, **overrides)
    model = DVIS(config)
    _load_release_weights(model, weights)
    return model


def _load_release_weights(model: DVIS, weights: Path) -> None:
    """Fill ``model`` from a released (detectron2-format) checkpoint file."""
    from dvis.compat.checkpoint import load_official

    load_official(model, weights)
