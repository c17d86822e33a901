"""Training checkpoints: everything needed to continue a run exactly.

``OUTPUT_DIR/checkpoints/last.pt`` holds the stage, the iteration reached, the trained module's
weights, optimizer, scheduler and AMP scaler states, and every process's RNG states (torch,
CUDA, numpy, python). The data position is the iteration (see :mod:`dvis.training.data`).

Written with ``torch.save`` into a temporary file beside the target, then ``os.replace``: a kill
during the write leaves the previous ``last.pt`` intact. Only tensors, dicts, lists, tuples and
numbers are stored, and files are read with ``torch.load(weights_only=True)`` (no code runs on
load). A failed write (disk full, no permission) is an :class:`OutputWriteError` naming the file;
the previous file is then unchanged.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvis.errors import CheckpointError
from dvis.fileio import atomic_write, writing
from dvis.modeling.io import load_failure, non_finite

FORMAT = "dvis-training-checkpoint"
VERSION = 1


def checkpoint_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints" / "last.pt"


def rng_state() -> dict[str, Any]:
    """This process's random states, in a weights-only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    payload = {"format": FORMAT, "version": VERSION, **state}
    with writing(path, "training checkpoint"):
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        atomic_write(path, lambda tmp: torch_save(payload, tmp), "training checkpoint")


def torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` that reports a failed write as the OSError it is.

    Given a file name, ``torch.save``'s zip writer turns a failed write (disk full) into a
    ``RuntimeError`` ("unexpected pos ...") that says nothing of the cause; given an open file, the
    failed ``write`` call's OSError is that RuntimeError's context, re-raised here.
    """
    with open(path, "wb") as handle:
        try:
            torch.save(obj, handle)
        except RuntimeError as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, OSError):
                raise cause from None
            raise


def load_checkpoint(path: Path, stage: str) -> dict[str, Any]:
    """Read and check a training checkpoint for ``stage``; CheckpointError says what is wrong."""
    if not path.is_file():
        raise CheckpointError(f"training checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: not a readable training checkpoint: {load_failure(err, path)}") from None
    if not isinstance(state, dict) or not _is(state.get("format"), FORMAT):
        raise CheckpointError(f"{path}: not a dvis training checkpoint (expected format {FORMAT!r})")
    if not _is(state.get("version"), VERSION):
        raise CheckpointError(f"{path}: checkpoint version {_short(state.get('version'))}, this dvis reads {VERSION}")
    if not isinstance(state.get("stage"), str):
        raise CheckpointError(f"{path}: 'stage' = {_short(state.get('stage'))}; expected one of the stage names")
    if state["stage"] != stage:
        raise CheckpointError(
            f"{path}: this is a {state['stage']}-stage checkpoint, but you are training the {stage} stage; "
            f"use an output_dir of its own for each stage")
    _check_finite_weights(state, path)
    return state


def _check_finite_weights(state: dict[str, Any], path: Path) -> None:
    """A checkpoint written after training diverged: say so, rather than fail later on a NaN loss."""
    bad = non_finite(state["model"]) if isinstance(state.get("model"), dict) else []
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"{path}: the checkpoint holds non-finite weights (NaN or infinite values in "
                              f"{len(bad)} tensor(s) of 'model': {shown}); resume from an earlier copy or train "
                              f"this stage again")


def _is(value: Any, expected: str | int) -> bool:
    """``value == expected`` for plain values only (a tensor or list is never equal)."""
    return type(value) is type(expected) and value == expected


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
