"""Faults during training: a rerun never destroys a previous run, non-finite gradients stop training
before the weights change (AMP's GradScaler skips them instead), and a full disk is an
OutputWriteError naming the file, with the previous file intact."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
import yaml
from test_train_common import config_dict, make_config, one_thread, synthetic_root, trained_params  # noqa: F401

from dvis.cli import main
from dvis.errors import ConfigError, DataError
from dvis.errors import OutputWriteError
from dvis.training import cache as cache_module
from dvis.training import checkpoint as checkpoint_module
from dvis.training import loop as loop_module
from dvis.training.checkpoint import checkpoint_path, load_checkpoint
from dvis.training.loop import NonFiniteLossError, Trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ no overwriting
def test_a_rerun_without_resume_refuses_and_changes_nothing(tmp_path, synthetic_root, capsys):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config_dict("segmenter", synthetic_root, tmp_path / "o")))
    argv = ["train", "segmenter", "--no-progress", "--config", str(config_file)]
    assert main([*argv, "solver.max_iter=2"]) == 0
    before = snapshot(tmp_path / "o")
    assert {"metrics.csv", "checkpoints/last.pt", "model/model.safetensors"} <= before.keys()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"output_dir {tmp_path / 'o'} already holds a training run" in err
    assert "pass --resume" in err and "another output_dir" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="already holds a training run"):
        Trainer(make_config("segmenter", synthetic_root, tmp_path / "o"), "segmenter", progress=False)
    assert snapshot(tmp_path / "o") == before
    assert main(["train", "segmenter", "--resume", *argv[2:], "solver.max_iter=3"]) == 0  # what the message proposes works
    assert load_checkpoint(checkpoint_path(tmp_path / "o"), "segmenter")["iteration"] == 3


# ---------------------------------------------------------------------------- non-finite gradients
def poison_gradients(trainer: Trainer, from_iteration: int) -> torch.nn.Parameter:
    """Make one trained parameter's gradient NaN from ``from_iteration`` on (the loss stays finite)."""
    param = next(p for p in trainer.trained.parameters() if p.requires_grad)
    param.register_hook(lambda grad: grad * float("nan") if trainer.iteration >= from_iteration else grad)
    return param


def test_a_non_finite_gradient_norm_stops_training_before_the_weights_change(tmp_path, synthetic_root):
    trainer = Trainer(make_config("segmenter", synthetic_root, tmp_path / "o"), "segmenter", progress=False)
    poison_gradients(trainer, from_iteration=2)
    with pytest.raises(NonFiniteLossError, match=r"^iteration 2: the gradient norm is nan \(non-finite\) although "
                                                 "every loss term is finite"):
        trainer.train()
    saved = load_checkpoint(checkpoint_path(tmp_path / "o"), "segmenter")  # checkpoint_period 2
    assert saved["iteration"] == 2
    current = trained_params(trainer.trained)
    for name, value in saved["model"].items():  # the failed step changed nothing
        assert torch.equal(current[name], value), name
        assert torch.isfinite(value).all() or not value.is_floating_point(), name


def test_with_amp_the_grad_scaler_skips_a_non_finite_step_and_training_goes_on(tmp_path, synthetic_root):
    """AMP's intended behaviour (a CPU GradScaler stands in for the CUDA one; the same code path)."""
    trainer = Trainer(make_config("segmenter", synthetic_root, tmp_path / "o", solver={"max_iter": 3}),
                      "segmenter", progress=False)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    param = poison_gradients(trainer, from_iteration=1)
    before = {}  # the parameter at the start of each iteration

    def record(module, args) -> None:
        before.setdefault(trainer.iteration, param.detach().clone())

    trainer.stage_module.register_forward_pre_hook(record)
    result = trainer.train()
    assert result.iteration == 3 and trainer.scaler.get_scale() == 2.0**6  # halved at each skipped step
    assert not torch.equal(before[0], before[1]) and torch.equal(before[1], before[2])  # only step 0 applied
    assert torch.equal(before[2], param.detach())


# ----------------------------------------------------------------------------------- disk full
def test_disk_full_while_writing_the_checkpoint_is_a_clear_error(tmp_path, synthetic_root, monkeypatch, capsys):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config_dict("segmenter", synthetic_root, tmp_path / "o")))
    argv = ["train", "segmenter", "--no-progress", "--config", str(config_file)]
    assert main([*argv, "solver.max_iter=2"]) == 0
    path = checkpoint_path(tmp_path / "o")
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    capsys.readouterr()
    assert main(["train", "segmenter", "--resume", *argv[2:], "solver.max_iter=4"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: cannot write the training checkpoint {path}: No space left on device; the previous "
                   "version (if any) is unchanged\n")
    assert path.read_bytes() == before and not list(path.parent.glob("*.tmp"))
    with pytest.raises(OutputWriteError) as info:  # a DataError and an OSError, for callers that catch either
        Trainer(make_config("segmenter", synthetic_root, tmp_path / "o", solver={"max_iter": 4}), "segmenter",
                resume=True, progress=False).train()
    assert isinstance(info.value, DataError) and isinstance(info.value, OSError)


def test_disk_full_while_logging_or_exporting_names_the_file(tmp_path, synthetic_root, monkeypatch):
    trainer = Trainer(make_config("segmenter", synthetic_root, tmp_path / "a"), "segmenter", progress=False)
    monkeypatch.setattr(Path, "open", disk_full)
    with pytest.raises(OutputWriteError, match=f"cannot write the metrics file {tmp_path / 'a' / 'metrics.csv'}: "
                                               "No space left on device"):
        trainer.train()
    monkeypatch.undo()
    trainer = Trainer(make_config("segmenter", synthetic_root, tmp_path / "b"), "segmenter", progress=False)
    monkeypatch.setattr(loop_module, "save_pretrained", disk_full)
    with pytest.raises(OutputWriteError, match=f"cannot write the model folder {tmp_path / 'b' / 'model'}: No space"):
        trainer.train()
    assert load_checkpoint(checkpoint_path(tmp_path / "b"), "segmenter")["iteration"] == 4


def test_disk_full_while_caching_names_the_cache_file(tmp_path, synthetic_root, monkeypatch):
    from test_train_common import saved_model

    init = saved_model(tmp_path / "init", ("segmenter",))
    monkeypatch.setattr(cache_module, "save_safetensors", disk_full)
    config = make_config("tracker", synthetic_root, tmp_path / "o", init, cache={"enabled": "on"})
    with pytest.raises(OutputWriteError, match=r"cannot write the segmenter cache file .*video_000000\.safetensors"):
        Trainer(config, "tracker", progress=False)
    assert not list((tmp_path / "o" / "segmenter_cache").glob("*.tmp"))
