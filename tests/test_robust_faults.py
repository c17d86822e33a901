"""Faults: ``kill -9`` during training, during checkpoint writing and during ``dvis segment``,
then rerun; disk full while writing results; NaN losses.

Properties: a resumed training run continues from the last good checkpoint and ends with the
same weights as an uninterrupted run; a checkpoint being written when the process dies leaves the
previous one loadable; a rerun ``dvis segment`` skips the videos finished before the kill and
merges complete results; a failed write names the file and leaves the previous results intact;
a NaN loss stops training with the iteration and the loss term named.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from dvis.cli import main as dvis_main
from dvis.data.writer import VideoWriter
from dvis import fileio
from dvis.evaluation import writers
from dvis.modeling.dvis import DVIS
from dvis.modeling.io import save_pretrained
from dvis.training.checkpoint import checkpoint_path, load_checkpoint
from test_model_io import tiny_config

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_ITER = 8


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def _dvis(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvis.cli", *args]


def _run(command: list[str], log: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=_env(), timeout=timeout)
    assert done.returncode == 0, log.read_text()[-3000:]
    return done


def _kill_when(command: list[str], ready, log: Path, timeout: float = 300) -> None:
    """Start ``command`` and SIGKILL it as soon as ``ready()`` is true."""
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=_env())
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"{command[3:5]} ended (rc {process.returncode}) before it could be killed:\n"
                            f"{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{command[3:5]} never became ready to kill:\n{log.read_text()[-3000:]}")
            time.sleep(0.01)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory) -> Path:
    from dvis.data.synthetic import generate

    root = tmp_path_factory.mktemp("faults") / "set"
    generate(root, videos=3, frames=8, seed=3, height=64, width=64, objects=(2, 3), occlusion="heavy")
    return root


def _train_config(root: Path, out: Path, path: Path) -> Path:
    segmenter = dict(backbone="resnet", num_classes=6, hidden_dim=32, mask_dim=32, convs_dim=32, num_heads=4,
                     dim_feedforward=64, dec_layers=3, num_queries=6, enc_layers=1, enc_dim_feedforward=64,
                     resnet_stem_out_channels=8, resnet_res2_out_channels=16, resnet_width_per_group=4)
    values = {
        "output_dir": str(out), "seed": 1, "model": {"segmenter": segmenter}, "init": {"model": None},
        "data": {"format": "ytvis", "root": str(root), "annotations": "annotations.json", "image_root": "JPEGImages",
                 "num_frames": 2, "frame_range": 2, "augmentation": None, "num_workers": 0},
        "solver": {"max_iter": MAX_ITER, "steps": [6], "batch_size": 2, "clips_per_gpu": 2, "checkpoint_period": 2,
                   "log_period": 1, "base_lr": 1e-3},
        "loss": {"num_points": 64}, "cache": {"enabled": "off"},
    }
    path.write_text(yaml.safe_dump(values))
    return path


def _logged_iterations(out: Path) -> list[int]:
    path = out / "metrics.csv"
    if not path.is_file():
        return []
    try:
        return [int(row["iteration"]) for row in csv.DictReader(path.open(newline=""))]
    except (ValueError, KeyError):  # a row being written
        return []


def test_kill_during_training_resumes_from_the_last_checkpoint_exactly(synthetic_set, tmp_path):
    reference_out, killed_out = tmp_path / "reference", tmp_path / "killed"
    reference_cfg = _train_config(synthetic_set, reference_out, tmp_path / "reference.yaml")
    killed_cfg = _train_config(synthetic_set, killed_out, tmp_path / "killed.yaml")
    train = ("train", "segmenter", "--device", "cpu", "--no-progress", "--config")
    _run(_dvis(*train, str(reference_cfg)), tmp_path / "reference.log")

    # killed after iteration 3 was logged: the last checkpoint is the one of iteration 2
    _kill_when(_dvis(*train, str(killed_cfg)), lambda: max(_logged_iterations(killed_out), default=0) >= 3,
               tmp_path / "killed.log")
    saved = load_checkpoint(checkpoint_path(killed_out), "segmenter")
    assert saved["iteration"] in (2, 4) and not (killed_out / "model").exists()

    _run(_dvis(*train, str(killed_cfg), "--resume"), tmp_path / "resumed.log")
    assert _logged_iterations(killed_out) == list(range(1, MAX_ITER + 1))  # no gap, no duplicate
    assert load_checkpoint(checkpoint_path(killed_out), "segmenter")["iteration"] == MAX_ITER
    reference = load_file(str(reference_out / "model" / "model.safetensors"))
    resumed = load_file(str(killed_out / "model" / "model.safetensors"))
    assert reference.keys() == resumed.keys()
    different = [k for k in reference if not torch.equal(reference[k], resumed[k])]
    assert not different, f"resumed weights differ from the uninterrupted run in {different[:5]}"


_KILLED_WHILE_SAVING = """
import os, signal, sys, torch
from pathlib import Path
from dvis.training import checkpoint
path = Path(sys.argv[1])
checkpoint.save_checkpoint(path, {"stage": "segmenter", "iteration": 2, "model": {"w": torch.ones(1000)}})

def dying_save(payload, handle):  # writes part of the open file, then the process is killed
    handle.write(b"PK\\x03\\x04" + b"\\0" * 5000)
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = dying_save
checkpoint.save_checkpoint(path, {"stage": "segmenter", "iteration": 4, "model": {"w": torch.zeros(1000)}})
"""


def test_kill_during_checkpoint_writing_keeps_the_previous_checkpoint(tmp_path):
    path = checkpoint_path(tmp_path)
    done = subprocess.run([sys.executable, "-c", _KILLED_WHILE_SAVING, str(path)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    state = load_checkpoint(path, "segmenter")
    assert state["iteration"] == 2 and torch.equal(state["model"]["w"], torch.ones(1000))
    # the half-written temporary file is left beside it (SIGKILL runs no cleanup), never read,
    # and removed by the next checkpoint write
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.") and leftovers[0].endswith(".tmp")
    from dvis.training.checkpoint import save_checkpoint

    save_checkpoint(path, {"stage": "segmenter", "iteration": 4, "model": {"w": torch.zeros(1000)}})
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    assert load_checkpoint(path, "segmenter")["iteration"] == 4


def test_nan_loss_stops_training_naming_iteration_and_term(synthetic_set, tmp_path):
    from dvis.training.config import load_train_config
    from dvis.training.loop import NonFiniteLossError, Trainer

    config = load_train_config(str(_train_config(synthetic_set, tmp_path / "out", tmp_path / "cfg.yaml")), [])
    trainer = Trainer(config, "segmenter", device="cpu", progress=False)
    network = trainer.network

    class Poisoned(torch.nn.Module):
        """The stage network, with one loss term turned NaN from iteration 3 on."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = network
            self.term = None

        def forward(self, batch, guided):
            terms = self.inner(batch, guided)
            self.term = self.term or sorted(terms)[-1]
            if trainer.iteration >= 3:
                terms[self.term] = terms[self.term] * float("nan")
            return terms

    trainer.network = poisoned = Poisoned()
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    assert str(info.value).startswith(f"iteration 3: loss term {poisoned.term} is nan")
    saved = load_checkpoint(checkpoint_path(tmp_path / "out"), "segmenter")
    assert saved["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------- dvis segment


@pytest.fixture(scope="module")
def segment_inputs(tmp_path_factory) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("segment")
    torch.manual_seed(0)
    model = save_pretrained(DVIS(tiny_config()).eval(), folder / "model")
    rng = np.random.default_rng(0)
    videos = []
    for name in ("a", "b", "c", "d"):
        videos.append(folder / f"{name}.mp4")
        with VideoWriter(videos[-1], fps=10) as writer:
            for _ in range(6):
                writer.write(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    return model, videos


def _partials(out: Path) -> dict[str, tuple[int, bytes]]:
    folder = out / ".partial"
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.glob("*.json")}


def test_kill_during_segment_then_rerun_skips_finished_videos(segment_inputs, tmp_path):
    model, videos = segment_inputs
    out = tmp_path / "out"
    command = _dvis("segment", *map(str, videos), "--model", str(model), "--out", str(out), "--device", "cpu",
                    "--no-render", "--quiet")
    _kill_when(command, lambda: len(_partials(out)) >= 1, tmp_path / "killed.log")
    before = _partials(out)
    assert 1 <= len(before) < len(videos)
    for _name, (_mtime, content) in before.items():
        json.loads(content)  # every partial on disk is complete JSON
    assert not (out / "results.json").exists()

    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"skipping {len(before)} video(s) already done" in done.stderr
    after = _partials(out)
    assert all(after[name] == before[name] for name in before)  # finished videos were not redone
    results = json.loads((out / "results.json").read_text())
    assert len(after) == len(videos)
    merged = [json.loads(content)["video_id"] for _mtime, content in after.values()]
    assert {entry["video_id"] for entry in results} == set(merged) and len(set(merged)) == len(videos)


# ----------------------------------------------------------------------------- disk full


def test_disk_full_during_segment_is_a_clear_error_and_keeps_previous_results(segment_inputs, tmp_path,
                                                                              monkeypatch, capsys):
    model, videos = segment_inputs
    out = tmp_path / "out"
    argv = ["segment", *map(str, videos[:2]), "--model", str(model), "--out", str(out), "--device", "cpu",
            "--no-render", "--quiet"]
    assert dvis_main(argv) == 0
    previous = (out / "results.json").read_bytes()
    for partial in (out / ".partial").glob("*.json"):
        partial.unlink()  # force a recompute that has to write again

    def no_space(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", no_space)
    capsys.readouterr()
    assert dvis_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write ") and "No space left on device" in err and "Traceback" not in err
    assert (out / "results.json").read_bytes() == previous
    assert not [p for p in out.rglob("*.tmp")]


_FILE_SIZE_LIMIT = """
import resource, signal, sys
from dvis.errors import OutputWriteError
from dvis.evaluation.writers import write_ytvis_results
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_ytvis_results(sys.argv[1], [{"video_id": 1, "category_id": 1, "score": 0.5,
                                       "segmentations": ["x" * 100] * 100}])
except OutputWriteError as err:
    print("refused:", err)
"""


def test_a_real_failed_write_keeps_the_previous_results(tmp_path):
    """The kernel refuses the write (RLIMIT_FSIZE): the same path as a full disk."""
    target = tmp_path / "results.json"
    target.write_text('[{"previous": true}]')
    done = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMIT, str(target)], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: cannot write ") and "results.json" in done.stdout
    assert target.read_text() == '[{"previous": true}]'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


# ----------------------------------------------------------------------------- NaN / Inf inputs


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_frames_are_refused_by_the_predictor(bad):
    """Frames must be uint8 RGB (which cannot hold NaN / Inf): float frames are refused by index."""
    from dvis.errors import InputError
    from dvis.inference.predictor import VideoPredictor

    torch.manual_seed(0)
    predictor = VideoPredictor(DVIS(tiny_config()).eval(), mode="online")
    good = np.zeros((32, 48, 3), np.uint8)
    poisoned = np.full((32, 48, 3), bad, np.float32)
    with pytest.raises(InputError, match=r"frame 2 must be an \(H, W, 3\) uint8 RGB array.*float32"):
        predictor([good, good, poisoned, good])
