"""Exact resume: N steps straight == N/2, stop (or SIGKILL) and resume; atomic checkpoints."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_train_common import (  # noqa: F401 (fixtures one_thread, synthetic_root)
    config_dict,
    make_config,
    one_thread,
    saved_model,
    synthetic_root,
    trained_params,
)

from dvis.training import checkpoint as checkpoint_module
from dvis.training.checkpoint import checkpoint_path, load_checkpoint
from dvis.training.loop import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def optimizer_tensors(trainer: Trainer) -> list[torch.Tensor]:
    return [v for state in trainer.optimizer.state_dict()["state"].values() for v in state.values()
            if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("stage", ["segmenter", "tracker"])
def test_stop_and_resume_gives_identical_parameters(stage, tmp_path, synthetic_root):
    init = None if stage == "segmenter" else saved_model(tmp_path / "init", ("segmenter",))
    # max_iter 4: the guided-matching switch (tracker) happens at iteration 2, inside the resumed half
    straight = Trainer(make_config(stage, synthetic_root, tmp_path / "a", init), stage, progress=False)
    straight.train()
    first = Trainer(make_config(stage, synthetic_root, tmp_path / "b", init), stage, progress=False)
    assert first.train(stop_at=2).iteration == 2
    assert load_checkpoint(checkpoint_path(tmp_path / "b"), stage)["iteration"] == 2
    resumed = Trainer(make_config(stage, synthetic_root, tmp_path / "b", init), stage, resume=True, progress=False)
    assert resumed.iteration == 2
    result = resumed.train()
    assert result.iteration == 4
    assert_same(trained_params(straight.trained), trained_params(resumed.trained))
    for x, y in zip(optimizer_tensors(straight), optimizer_tensors(resumed)):
        assert torch.equal(x, y)
    assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()
    rows = list(csv.DictReader((tmp_path / "b" / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]


def test_sigkill_during_training_then_resume_matches_a_straight_run(tmp_path, synthetic_root):
    init = saved_model(tmp_path / "init", ("segmenter",))
    values = config_dict("tracker", synthetic_root, tmp_path / "killed", init)
    values["solver"].update(max_iter=200, checkpoint_period=1)
    values["data"]["num_workers"] = 1
    config_file = tmp_path / "tracker.yaml"
    config_file.write_text(yaml.safe_dump(values))
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    code = ("import sys, torch; torch.set_num_threads(%d); from dvis.cli import main; sys.exit(main(sys.argv[1:]))"
            % torch.get_num_threads())
    child = subprocess.Popen([sys.executable, "-c", code, "train", "tracker", "--config", str(config_file),
                              "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = checkpoint_path(tmp_path / "killed")
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if last.is_file() and load_checkpoint(last, "tracker")["iteration"] >= 2:
                break
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read().decode()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed_at = load_checkpoint(last, "tracker")["iteration"]  # still a complete checkpoint
    stop = killed_at + 2
    resumed = Trainer(make_config("tracker", synthetic_root, tmp_path / "killed", init,
                                  solver={"max_iter": 200, "checkpoint_period": 1}), "tracker",
                      resume=True, progress=False)
    assert resumed.iteration == killed_at
    resumed.train(stop_at=stop)
    straight = Trainer(make_config("tracker", synthetic_root, tmp_path / "straight", init,
                                   solver={"max_iter": 200, "checkpoint_period": 1}), "tracker", progress=False)
    straight.train(stop_at=stop)
    assert_same(trained_params(straight.trained), trained_params(resumed.trained))
    iterations = [int(r["iteration"]) for r in csv.DictReader((tmp_path / "killed" / "metrics.csv").open())]
    assert iterations == list(range(1, stop + 1))
    assert not list(last.parent.glob("*.tmp"))  # a temporary file of the killed write is cleaned up


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, synthetic_root, monkeypatch):
    trainer = Trainer(make_config("segmenter", synthetic_root, tmp_path / "o"), "segmenter", progress=False)
    trainer.train(stop_at=2)
    path = checkpoint_path(tmp_path / "o")
    before = path.read_bytes()

    def broken_save(obj, handle):  # torch.save is given the open temporary file
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        trainer._checkpoint()
    assert path.read_bytes() == before and load_checkpoint(path, "segmenter")["iteration"] == 2
    assert not list(path.parent.glob("*.tmp"))
