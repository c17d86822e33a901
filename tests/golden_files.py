"""Collect bundled golden files plus every file of the same format under an env var path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"


def torch_golden_with(*keys: str) -> Callable[[Path], bool]:
    """A format test: a torch file (weights-only loadable) whose top-level dict holds ``keys``."""

    def is_format(path: Path) -> bool:
        try:
            data = torch.load(path, weights_only=True, map_location="cpu")
        except Exception:  # not a loadable torch file: not this format
            return False
        return isinstance(data, dict) and set(keys) <= set(data)

    return is_format


def golden_files(bundled: list[Path], env_var: str, pattern: str = "*.pt",
                 is_format: Callable[[Path], bool] | None = None) -> list[Path]:
    """Bundled files, then every file matching ``pattern`` (and ``is_format``) under ``$env_var``.

    ``$env_var`` may name a file or a folder (searched recursively; files of other formats are
    left out). A set variable under which no file of the format is found, or that names nothing,
    adds a sentinel path that does not exist: the test run on it fails (never a silent skip,
    and the other tests still run). Tests must start with :func:`require_file`.
    """
    files = list(bundled)
    extra = os.environ.get(env_var)
    if not extra:
        return files
    path = Path(extra)
    candidates = [path] if path.is_file() else sorted(path.rglob(pattern)) if path.is_dir() else []
    found = [p for p in candidates if is_format is None or is_format(p)]
    if not found:
        what = "does not exist" if not path.exists() else f"holds no golden file of this format ({pattern})"
        return files + [path / f"<{env_var}={extra} {what}>"]
    return files + found


def require_file(path: Path) -> None:
    """Fail (not skip) on the sentinel that :func:`golden_files` adds for an empty env path."""
    assert Path(path).is_file(), f"not a golden file: {path}"


def ids(files: list[Path]) -> list[str]:
    return [str(f.relative_to(DATA)) if f.is_relative_to(DATA) else str(f) for f in files]


# ------------------------------------------------------------------ release checkpoints and layouts
def split_segmenter_keys(state_dict: dict) -> dict:
    """The segmenter part (``backbone.*``, ``sem_seg_head.*``) of a full release state dict."""
    from dvis.compat.official import SEGMENTER_PREFIXES

    return {k: v for k, v in state_dict.items() if k.startswith(SEGMENTER_PREFIXES)}


def segmenter_keys_from_layout(layout_json_path) -> dict:
    """Segmenter keys of a layout inventory json: release key -> (shape, dtype); float32 except
    Swin ``relative_position_index`` (int64), as the inventory's note says."""
    import json

    import torch

    from dvis.compat.official import SEGMENTER_PREFIXES

    layout = json.loads(Path(layout_json_path).read_text(encoding="utf-8"))
    return {key: (tuple(int(s) for s in shape), torch.int64 if key.endswith("relative_position_index") else torch.float32)
            for key, shape in layout["keys"].items() if key.startswith(SEGMENTER_PREFIXES)}
