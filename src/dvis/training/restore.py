"""Check a training checkpoint against the run resuming it, then load it.

Every entry a resume needs is checked before anything is loaded: the iteration, the trained
module's weights (names and shapes, :func:`dvis.modeling.io.check_state_dict`), the AdamW, LR
schedule and AMP scaler states (the layout and value kinds of this run's own states: the same
parameter groups, per-parameter moments of the parameter's shape, a schedule at the checkpoint's
iteration) and one RNG state per process. Anything else is a :class:`CheckpointError` naming the
file and the entry; loading errors that slip past the checks are turned into one as well, so a
damaged checkpoint never surfaces as a ``KeyError`` or ``RuntimeError``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dvis.errors import CheckpointError
from dvis.modeling.io import check_state_dict
from dvis.training.checkpoint import rng_state, set_rng_state

REQUIRED = ("iteration", "model", "optimizer", "scheduler", "scaler", "rng")
# AdamW fills these in when a checkpoint of an older torch lacks them (Adam.__setstate__)
OPTIONAL_GROUP_KEYS = {"amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused",
                       "decoupled_weight_decay"}
MOMENTS = ("exp_avg", "exp_avg_sq")
SCHEDULER_KEYS = ("base_lrs", "last_epoch", "lr_lambdas")  # what LambdaLR cannot do without


@dataclass
class ResumeTargets:
    """What a checkpoint is loaded into: the trained module and its training state."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    world_size: int = 1
    rank: int = 0


def restore_training_state(path: Path, state: dict[str, Any], targets: ResumeTargets) -> int:
    """Check ``state`` (a :func:`load_checkpoint` result) and load it; returns the iteration."""
    check_training_state(path, state, targets)
    with restoring(path, "model"):
        targets.module.load_state_dict(state["model"], strict=True)
    with restoring(path, "optimizer"):
        targets.optimizer.load_state_dict(state["optimizer"])
    with restoring(path, "scheduler"):
        targets.scheduler.load_state_dict(state["scheduler"])
    with restoring(path, "scaler"):
        targets.scaler.load_state_dict(state["scaler"])
    with restoring(path, "rng"):
        set_rng_state(state["rng"][targets.rank])
    return state["iteration"]


@contextmanager
def restoring(path: Path, entry: str):
    """Turn a loading error of one checkpoint entry into a CheckpointError naming it."""
    try:
        yield
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError, OverflowError) as err:
        raise CheckpointError(f"{path}: cannot restore '{entry}' from this training checkpoint: "
                              f"{type(err).__name__}: {err}") from None


def check_training_state(path: Path, state: dict[str, Any], targets: ResumeTargets) -> None:
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path}: training checkpoint without {', '.join(missing)} (a resume needs "
                              f"{', '.join(REQUIRED)}); the file is damaged or was not written by dvis train")
    iteration = state["iteration"]
    if not _is_int(iteration) or iteration < 0:
        raise CheckpointError(f"{path}: 'iteration' = {_show(iteration)}; expected a whole number >= 0")
    _check_model(path, state["model"], targets.module)
    _check_optimizer(path, state["optimizer"], targets.optimizer)
    _check_scheduler(path, state["scheduler"], targets.scheduler, iteration)
    _check_scaler(path, state["scaler"], targets.scaler)
    _check_rng(path, state["rng"], targets.world_size)


# ----------------------------------------------------------------------------------- entries
def _check_model(path: Path, weights: Any, module: nn.Module) -> None:
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: 'model' is {_show(weights)}; expected the trained module's state dict")
    bad = [_show(k) for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: 'model' has entries that are not name -> tensor: {', '.join(bad[:5])}")
    check_state_dict(module.state_dict(), weights, f"{path} ('model')")


def _check_optimizer(path: Path, saved: Any, optimizer: torch.optim.Optimizer) -> None:
    current = optimizer.state_dict()
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) \
            or not isinstance(saved.get("state"), dict):
        raise CheckpointError(f"{path}: 'optimizer' is not an optimizer state (expected a mapping with "
                              "'state' and 'param_groups')")
    groups, expected = saved["param_groups"], current["param_groups"]
    if len(groups) != len(expected):
        raise CheckpointError(f"{path}: 'optimizer' has {len(groups)} parameter groups, this run has {len(expected)} "
                              "(the trained module or solver settings changed)")
    for index, (group, template) in enumerate(zip(groups, expected, strict=True)):
        _fail_if(path, f"optimizer.param_groups[{index}]", _group_mismatch(group, template))
    params = dict(enumerate(p for g in optimizer.param_groups for p in g["params"]))
    for pid, entry in saved["state"].items():
        _fail_if(path, f"optimizer.state[{_show(pid)}]", _moment_mismatch(pid, entry, params))


def _group_mismatch(group: Any, template: dict) -> str | None:
    if not isinstance(group, dict):
        return f"expected a mapping, got {_show(group)}"
    ids = group.get("params")
    if not isinstance(ids, list) or not all(_is_int(i) for i in ids) or ids != template["params"]:
        return f"params {_show(group.get('params'))}, this run's group holds {template['params']}"
    missing = [k for k in template if k not in group and k not in OPTIONAL_GROUP_KEYS]
    if missing:
        return f"missing {', '.join(missing)}"
    present = {k: group[k] for k in template if k in group}
    return _mismatch(present, {k: template[k] for k in present})


def _moment_mismatch(pid: Any, entry: Any, params: dict[int, torch.Tensor]) -> str | None:
    """AdamW's per-parameter state: a step count and moments of the parameter's shape and dtype."""
    if not _is_int(pid) or pid not in params:
        return f"no such parameter (this run has {len(params)})"
    meta = torch.empty_like(params[pid], device="meta")
    template = {"step": torch.empty((), device="meta"), **{name: meta for name in MOMENTS}}
    if isinstance(entry, dict) and "max_exp_avg_sq" in entry:
        template["max_exp_avg_sq"] = meta
    return _mismatch(entry, template, strict=True)


def _check_scheduler(path: Path, saved: Any, scheduler, iteration: int) -> None:
    template = scheduler.state_dict()
    if isinstance(saved, dict):
        # unknown names would be set as attributes of the scheduler (load_state_dict updates __dict__)
        clashing = [k for k in saved if k not in template and (not isinstance(k, str) or hasattr(scheduler, k))]
        if clashing:
            _fail_if(path, "scheduler", f"unexpected entries {', '.join(map(_show, clashing))}")
        saved = {k: v for k, v in saved.items() if k in template}
        template = {k: v for k, v in template.items() if k in saved or k in SCHEDULER_KEYS}
    _fail_if(path, "scheduler", _mismatch(saved, template))
    if saved["last_epoch"] != iteration:
        _fail_if(path, "scheduler", f"the LR schedule is at step {saved['last_epoch']}, the checkpoint at "
                                    f"iteration {iteration}")


def _check_scaler(path: Path, saved: Any, scaler: torch.amp.GradScaler) -> None:
    if not isinstance(saved, dict):
        _fail_if(path, "scaler", f"expected a mapping, got {_show(saved)}")
    if not scaler.is_enabled():  # a disabled scaler ignores the saved state
        return
    if not saved:
        _fail_if(path, "scaler", "the run was trained without AMP; resume it with solver.amp=off")
    _fail_if(path, "scaler", _mismatch(saved, scaler.state_dict()))


def _check_rng(path: Path, rngs: Any, world_size: int) -> None:
    if not isinstance(rngs, list):
        _fail_if(path, "rng", f"expected one RNG state per process, got {_show(rngs)}")
    if len(rngs) != world_size:
        raise CheckpointError(f"{path}: saved by {len(rngs)} processes, resumed with {world_size}; "
                              "resume with the same number of processes")
    template = {k: v for k, v in rng_state().items() if k != "cuda"}  # CUDA states: only where CUDA is
    for rank, saved in enumerate(rngs):
        if isinstance(saved, dict):
            saved = {k: v for k, v in saved.items() if k != "cuda"}
        _fail_if(path, f"rng[{rank}]", _mismatch(saved, template))


# ------------------------------------------------------------------------------- comparison
def _mismatch(value: Any, template: Any, where: str = "", strict: bool = False) -> str | None:
    """Why ``value`` does not have ``template``'s layout and value kinds (None if it has)."""
    at = f"{where}: " if where else ""
    if isinstance(template, torch.Tensor):
        if not isinstance(value, torch.Tensor) or value.dtype != template.dtype or value.shape != template.shape:
            return f"{at}expected a {template.dtype} tensor of shape {tuple(template.shape)}, got {_show(value)}"
        return None
    if isinstance(template, dict):
        return _dict_mismatch(value, template, where, strict)
    if isinstance(template, (list, tuple)):
        if type(value) is not type(template) or len(value) != len(template):
            return f"{at}expected a {type(template).__name__} of {len(template)}, got {_show(value)}"
        return next((m for i, (v, t) in enumerate(zip(value, template, strict=True))
                     if (m := _mismatch(v, t, f"{where}[{i}]")) is not None), None)
    if not _same_kind(value, template):
        return f"{at}expected {type(template).__name__}, got {_show(value)}"
    return None


def _dict_mismatch(value: Any, template: dict, where: str, strict: bool) -> str | None:
    at = f"{where}: " if where else ""
    if not isinstance(value, dict):
        return f"{at}expected a mapping, got {_show(value)}"
    missing = [str(k) for k in template if k not in value]
    extra = [_show(k) for k in value if k not in template] if strict else []
    if missing or extra:
        return at + "; ".join(filter(None, [missing and f"missing {', '.join(missing)}",
                                            extra and f"unexpected {', '.join(extra)}"]))
    return next((m for k, t in template.items()
                 if (m := _mismatch(value[k], t, f"{where}.{k}" if where else str(k))) is not None), None)


def _same_kind(value: Any, template: Any) -> bool:
    if template is None or isinstance(template, (bool, str)):
        return type(value) is type(template)
    if isinstance(template, int):
        return _is_int(value)
    if isinstance(template, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(template))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__} {text[:50]}..."


def _fail_if(path: Path, entry: str, problem: str | None) -> None:
    if problem is not None:
        raise CheckpointError(f"{path}: '{entry}' does not fit this run: {problem}")
