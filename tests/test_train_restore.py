"""Resuming from a damaged or mismatched training checkpoint: always a CheckpointError naming the file
and the entry (never a KeyError / RuntimeError from load_state_dict), checked before anything is
loaded. The fuzz test mutates a real checkpoint: every result is either refused with a
CheckpointError or restores a state that trains."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_train_common import config_dict, make_config, one_thread, synthetic_root  # noqa: F401 (fixtures)

from dvis.cli import main
from dvis.errors import CheckpointError
from dvis.training.checkpoint import checkpoint_path, load_checkpoint, rng_state, save_checkpoint
from dvis.training.config import SolverConfig
from dvis.training.loop import Trainer, lr_factor, param_groups
from dvis.training.restore import ResumeTargets, restore_training_state

SOLVER = SolverConfig(steps=[3], warmup_iters=2)


def targets(width: int = 4, scaler: bool = True) -> ResumeTargets:
    """A small trained module with this run's optimizer, schedule and (CPU) AMP scaler."""
    module = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.LayerNorm(width))
    optimizer = torch.optim.AdamW(param_groups(module, SOLVER, None), lr=SOLVER.base_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, SOLVER))
    return ResumeTargets(module, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=scaler))


def step(run: ResumeTargets) -> None:
    run.module(torch.randn(2, 3)).pow(2).sum().backward()
    run.optimizer.step()
    run.optimizer.zero_grad()
    run.scheduler.step()


def saved_state(iterations: int = 2) -> dict:
    torch.manual_seed(0)
    run = targets()
    for _ in range(iterations):
        step(run)
    return {"format": "dvis-training-checkpoint", "version": 1, "stage": "tracker", "iteration": iterations,
            "model": run.module.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "rng": [rng_state()],
            "world_size": 1}


VALID = saved_state()


@pytest.fixture(autouse=True)
def keep_global_rng():
    """Restoring sets the process's RNG states: put them back for the other tests."""
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    yield
    torch.set_rng_state(saved[0])
    np.random.set_state(saved[1])
    random.setstate(saved[2])


def restore(tmp: Path, state: dict, run: ResumeTargets | None = None) -> int:
    path = tmp / "last.pt"
    torch.save(state, path)
    return restore_training_state(path, load_checkpoint(path, "tracker"), run or targets())


def test_an_intact_checkpoint_restores_every_state(tmp_path):
    run = targets()
    assert restore(tmp_path, VALID, run) == 2
    for name, value in VALID["model"].items():
        assert torch.equal(run.module.state_dict()[name], value)
    assert run.scheduler.last_epoch == 2 and run.scaler.get_scale() == VALID["scaler"]["scale"]
    moments = run.optimizer.state_dict()["state"]
    assert moments.keys() == VALID["optimizer"]["state"].keys()
    assert torch.equal(moments[0]["exp_avg"], VALID["optimizer"]["state"][0]["exp_avg"])
    assert torch.equal(torch.get_rng_state(), VALID["rng"][0]["torch"])
    step(run)


def without(state: dict, *path) -> dict:
    state = copy.deepcopy(state)
    node = state
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return state


def replaced(state: dict, value, *path) -> dict:
    state = copy.deepcopy(state)
    node = state
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return state


DAMAGED = {  # name: (checkpoint, what the error says)
    "no model": (without(VALID, "model"), r"training checkpoint without model \(a resume needs"),
    "no rng": (without(VALID, "rng"), "without rng"),
    "iteration a string": (replaced(VALID, "2", "iteration"), "'iteration' = '2'; expected a whole number"),
    "weight missing": (without(VALID, "model", "1.weight"),
                       r"(?s)\('model'\): checkpoint does not fit the model.*missing keys.*1\.weight"),
    "weight of another shape": (replaced(VALID, torch.zeros(5, 3), "model", "0.weight"),
                                r"(?s)shape mismatches.*0\.weight: checkpoint \(5, 3\) vs model \(4, 3\)"),
    "weight not a tensor": (replaced(VALID, [1.0], "model", "0.bias"), "'model' has entries that are not name -> tensor"),
    "no param groups": (without(VALID, "optimizer", "param_groups"), "'optimizer' is not an optimizer state"),
    "group without lr": (without(VALID, "optimizer", "param_groups", 0, "lr"),
                         r"'optimizer.param_groups\[0\]'.*missing lr"),
    "lr a string": (replaced(VALID, "fast", "optimizer", "param_groups", 1, "lr"),
                    r"param_groups\[1\]'.*lr: expected float, got 'fast'"),
    "moment of another shape": (replaced(VALID, torch.zeros(2), "optimizer", "state", 0, "exp_avg"),
                                r"'optimizer.state\[0\]'.*exp_avg: expected a torch.float32 tensor of shape \(4, 3\)"),
    "moment without step": (without(VALID, "optimizer", "state", 1, "step"), r"'optimizer.state\[1\]'.*missing step"),
    "moment of no parameter": (replaced(VALID, {"step": 1}, "optimizer", "state", 9),
                               r"'optimizer.state\[9\]'.*no such parameter"),
    "schedule elsewhere": (replaced(VALID, 5, "scheduler", "last_epoch"),
                           "the LR schedule is at step 5, the checkpoint at iteration 2"),
    "scheduler attribute": (replaced(VALID, None, "scheduler", "optimizer"), "'scheduler'.*unexpected entries 'optimizer'"),
    "scaler without scale": (without(VALID, "scaler", "scale"), "'scaler'.*missing scale"),
    "two processes": (replaced(VALID, [VALID["rng"][0]] * 2, "rng"), "saved by 2 processes, resumed with 1"),
    "torch rng too short": (replaced(VALID, torch.zeros(3, dtype=torch.uint8), "rng", 0, "torch"),
                            r"'rng\[0\]'.*torch: expected a torch.uint8"),
    "no python rng": (without(VALID, "rng", 0, "python"), r"'rng\[0\]'.*missing python"),
}


@pytest.mark.parametrize("state, message", list(DAMAGED.values()), ids=list(DAMAGED))
def test_damaged_checkpoints_name_the_file_and_entry(state, message, tmp_path):
    run = targets()
    before = {k: v.clone() for k, v in run.module.state_dict().items()}
    with pytest.raises(CheckpointError, match=message) as info:
        restore(tmp_path, state, run)
    assert str(tmp_path / "last.pt") in str(info.value)
    for name, value in run.module.state_dict().items():  # checked before anything was loaded
        assert torch.equal(value, before[name])


def test_a_module_of_another_size_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"0\.weight: checkpoint \(4, 3\) vs model \(6, 3\)"):
        restore(tmp_path, VALID, targets(width=6))


def test_a_checkpoint_without_amp_resumed_with_amp_is_refused(tmp_path):
    no_amp = replaced(VALID, {}, "scaler")
    assert restore(tmp_path, no_amp, targets(scaler=False)) == 2
    with pytest.raises(CheckpointError, match="'scaler'.*trained without AMP; resume it with solver.amp=off"):
        restore(tmp_path, no_amp, targets(scaler=True))


# ------------------------------------------------------------------------------------ fuzzing
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4), st.lists(st.integers(-2, 5), max_size=3), st.tuples(st.integers(), st.floats()),
    st.dictionaries(st.sampled_from(["step", "lr", "scale", "x", 0, 1]), st.integers(0, 3), max_size=2),
    st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype),
              st.lists(st.integers(0, 4), max_size=2).map(tuple),
              st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8])),
)


def mutated(node, data, depth: int = 0):
    """``node`` with one entry somewhere below it deleted, replaced by junk, or mutated in turn."""
    keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
    key = data.draw(st.sampled_from(keys))
    child = node[key]
    descend = isinstance(child, (dict, list, tuple)) and len(child) > 0 and depth < 5
    ops = ["delete", "replace"] + (["descend"] * 3 if descend else [])
    op = data.draw(st.sampled_from(ops))
    new = dict(node) if isinstance(node, dict) else list(node)
    if op == "delete":
        del new[key]
    elif op == "replace":
        new[key] = data.draw(JUNK)
    else:
        new[key] = mutated(child, data, depth + 1)
    return tuple(new) if isinstance(node, tuple) else new


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_checkpoints_give_a_checkpoint_error_or_a_state_that_trains(data, tmp_path):
    state = VALID
    for _ in range(data.draw(st.integers(1, 3))):
        state = mutated(state, data)
    run = targets()
    try:
        restore(tmp_path, state, run)
    except CheckpointError as err:
        assert str(tmp_path / "last.pt") in str(err)
        return
    step(run)  # restored: it must train on
    torch.rand(1), np.random.rand(), random.random()


# ------------------------------------------------------------------------------ through dvis train
def test_resuming_a_damaged_or_mismatched_run_is_a_clear_error(tmp_path, synthetic_root, capsys):
    Trainer(make_config("segmenter", synthetic_root, tmp_path / "o"), "segmenter", progress=False).train(stop_at=2)
    path = checkpoint_path(tmp_path / "o")
    state = torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError, match=r"(?s)does not fit the model.*shape mismatches.*queries"):
        bigger = make_config("segmenter", synthetic_root, tmp_path / "o",
                             model={"segmenter": {**config_dict("segmenter", tmp_path, tmp_path)["model"]["segmenter"],
                                                  "num_queries": 7}})
        Trainer(bigger, "segmenter", resume=True, progress=False)
    save_checkpoint(path, {k: v for k, v in state.items() if k not in ("format", "version", "optimizer")})
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config_dict("segmenter", synthetic_root, tmp_path / "o")))
    assert main(["train", "segmenter", "--config", str(config_file), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: training checkpoint without optimizer") and "Traceback" not in err
