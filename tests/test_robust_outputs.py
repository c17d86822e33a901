"""Outputs under faults (issue 14, items 4 and 6): a full disk or a refused write in every writer
gives the ``error: cannot write ...`` line and leaves nothing half-written; SIGTERM and SIGKILL leave
no spill folders behind (SIGKILL's are swept by the next run); every output file gets the mode the
umask gives.

A real full disk needs a small tmpfs (root). These tests use the kernel's file-size limit instead
(``RLIMIT_FSIZE``: a write past it fails with ``EFBIG`` through the same code paths, with no root
needed), or an ``ENOSPC`` raised where the library would see it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dvis.cli import main
from dvis.errors import OutputWriteError
from dvis.inference import spill as spill_module
from dvis.inference.spill import FrameSpill, SpillFolder, sweep_stale_spills
from inference_helpers import random_frames, save_tiny_model, write_frame_folder, write_video

SRC = Path(__file__).resolve().parents[1] / "src"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    return env


def _with_file_size_limit(code: str, limit: int, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a child whose writes past ``limit`` bytes fail (EFBIG, as the kernel does)."""
    prologue = ("import resource, signal, sys\n"
                "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n")
    return subprocess.run([sys.executable, "-c", prologue + code, *args], env=_env(), capture_output=True,
                          text=True, timeout=300)


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") and ".tmp" in p.name or
            p.name.startswith("dvis-spill-")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", num_classes=6)


# ----------------------------------------------------------------------------- disk full (item 4)


def test_torch_save_refused_by_the_kernel_is_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    """torch.save given a path turns a failed write into RuntimeError("unexpected pos ...")."""
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    path.write_bytes(b"previous")
    code = ("import torch\n"
            "from dvis.errors import OutputWriteError\n"
            "from dvis.training.checkpoint import save_checkpoint\n"
            "try:\n"
            "    save_checkpoint(__import__('pathlib').Path(sys.argv[1]), {'w': torch.zeros(100_000)})\n"
            "except OutputWriteError as err:\n"
            "    print(err)\n")
    done = _with_file_size_limit(code, 64 * 1024, str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"cannot write the training checkpoint {path}: File too large; the previous version "
                           "(if any) is unchanged\n")
    assert path.read_bytes() == b"previous" and sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_safetensors_refused_by_the_kernel_is_a_clear_error(tmp_path):
    """safetensors raises SafetensorError("I/O error ... (os error 27)"), not an OSError."""
    code = ("from dvis.errors import OutputWriteError\n"
            "from dvis.modeling.io import save_pretrained\n"
            "from test_model_io import tiny_config\n"
            "from dvis.modeling.dvis import DVIS\n"
            "try:\n"
            "    save_pretrained(DVIS(tiny_config()), sys.argv[1])\n"
            "except OutputWriteError as err:\n"
            "    print(err)\n")
    done = _with_file_size_limit(code, 16 * 1024, str(tmp_path / "model"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"cannot write {tmp_path / 'model' / 'model.safetensors'}: File too large")
    assert not (tmp_path / "model").exists() or not list((tmp_path / "model").iterdir())


def test_overlay_video_refused_by_the_kernel_is_a_clear_error(tmp_path, model_dir):
    """PyAV raises av.error.OSError while muxing; `dvis segment` prints one line, exits 2, and
    leaves no temporary video, no partial and no spill folder."""
    clip = tmp_path / "clip"
    write_frame_folder(clip, random_frames(10, 240, 320))  # the overlay of noise is large, the spill small
    out, spills = tmp_path / "out", tmp_path / "spills"
    spills.mkdir()
    code = "from dvis.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    done = _with_file_size_limit(code, 256 * 1024, "segment", str(clip), "--model", str(model_dir), "--mode",
                                 "online", "--out", str(out), "--spill-dir", str(spills), "--quiet")
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"error: cannot write the video {out / 'clip.mp4'}: File too large; the previous "
                           "version (if any) is unchanged\n")
    assert sorted(p.name for p in out.iterdir()) == [] and not list(spills.iterdir())


def test_spill_refused_by_the_kernel_is_a_clear_error(tmp_path):
    code = ("import numpy as np\n"
            "from dvis.errors import OutputWriteError\n"
            "from dvis.inference.spill import SpillFolder\n"
            "with SpillFolder(sys.argv[1]) as folder:\n"
            "    try:\n"
            "        folder.get('x', (64, 64)).append(np.zeros((10, 64, 64), np.float32))\n"
            "    except OutputWriteError as err:\n"
            "        print(str(err).replace(str(folder.path), 'SPILL'))\n")
    done = _with_file_size_limit(code, 64 * 1024, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cannot write the spill file SPILL/x.bin: File too large (per-frame arrays")
    assert not list(tmp_path.iterdir())


def test_a_full_disk_while_spilling_stops_segment_with_one_line(tmp_path, model_dir, monkeypatch, capsys):
    clip = tmp_path / "clip"
    write_frame_folder(clip, random_frames(4))
    spills = tmp_path / "spills"
    spills.mkdir()

    def no_space(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spill_module.os, "pwrite", no_space)
    assert main(["segment", str(clip), "--model", str(model_dir), "--out", str(tmp_path / "out"), "--quiet",
                 "--spill-dir", str(spills)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the spill file ") and "No space left on device" in err
    assert len(err.splitlines()) == 1 and not list(spills.iterdir())
    assert not (tmp_path / "out" / ".partial").exists()


def test_a_spill_write_the_disk_takes_only_partly_is_completed(tmp_path, monkeypatch):
    """os.pwrite may write fewer bytes than asked (nearly full disk): the rest is written after."""
    real = os.pwrite
    monkeypatch.setattr(spill_module.os, "pwrite", lambda fd, data, offset: real(fd, data[:max(1, len(data) // 3)],
                                                                                offset))
    spill = FrameSpill(tmp_path / "x.bin", (5, 7))
    data = np.arange(4 * 35, dtype=np.float32).reshape(4, 5, 7)
    spill.append(data[:3])
    spill.append(data[3:])
    assert np.array_equal(spill.read_all().numpy(), data)
    spill.close()


# ----------------------------------------------------------------------------- signals (item 4)


def _segment_process(tmp_path: Path, model_dir: Path) -> tuple[subprocess.Popen, Path, Path]:
    video = tmp_path / "long.mp4"
    write_video(video, random_frames(300, 48, 64), fps=25)
    spills, out = tmp_path / "spills", tmp_path / "out"
    spills.mkdir()
    command = [sys.executable, "-m", "dvis.cli", "segment", str(video), "--model", str(model_dir), "--out",
               str(out), "--spill-dir", str(spills), "--quiet"]
    return subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), \
        spills, out


def _wait_for_spill(process: subprocess.Popen, spills: Path) -> None:
    deadline = time.monotonic() + 300  # start-up (imports, model) is slow on a loaded machine
    while not any(p.name.startswith("dvis-spill-") and any(p.iterdir()) for p in spills.iterdir()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no spill folder appeared"
        time.sleep(0.01)


def test_sigterm_during_segment_removes_the_spill_folder(tmp_path, model_dir):
    process, spills, out = _segment_process(tmp_path, model_dir)
    _wait_for_spill(process, spills)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.splitlines()[-1] == "terminated (SIGTERM); temporary files were removed"
    assert "Traceback" not in err
    assert not list(spills.iterdir()) and not _leftovers(out if out.exists() else tmp_path / "none")


def test_a_rerun_after_sigkill_sweeps_the_dead_process_spill_folder(tmp_path, model_dir):
    process, spills, _ = _segment_process(tmp_path, model_dir)
    _wait_for_spill(process, spills)
    process.kill()
    process.communicate(timeout=60)
    (stale,) = spills.iterdir()
    live = spills / f"dvis-spill-{socket.gethostname()}-{os.getpid()}-live"  # this process: running
    other_host = spills / f"dvis-spill-other-host-{process.pid}-abc"  # a shared folder: not ours to judge
    unknown = spills / "dvis-spill-x1y2z3"  # no owner in the name (older dvis): kept
    for folder in (live, other_host, unknown):
        folder.mkdir()
    with SpillFolder(spills) as fresh:
        assert sorted(p.name for p in spills.iterdir()) == sorted(p.name for p in (fresh.path, live, other_host,
                                                                                   unknown))
    assert not stale.exists() and sweep_stale_spills(spills) == []


# ----------------------------------------------------------------------------- file modes (item 6)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_every_output_file_gets_the_umask_mode(tmp_path, model_dir, umask_027):
    """Under umask 027 files are 0640 and folders 0750, as `open()` / `mkdir` would make them
    (mkstemp's 0600 would keep the files from the group of a shared output folder)."""
    from dvis.data.synthetic import generate
    from dvis.modeling.dvis import DVIS
    from dvis.modeling.io import save_pretrained
    from dvis.training.checkpoint import save_checkpoint
    from dvis.training.loop import MetricsLog
    from test_model_io import tiny_config

    clip = tmp_path / "clip"
    write_frame_folder(clip, random_frames(3))
    out = tmp_path / "out"
    assert main(["segment", str(clip), "--model", str(model_dir), "--mode", "online", "--out", str(out),
                 "--quiet"]) == 0
    assert main(["segment", str(clip), "--model", str(model_dir), "--mode", "online", "--task", "vps", "--out",
                 str(tmp_path / "vps"), "--no-render", "--quiet"]) == 0
    annotations = generate(tmp_path / "set", videos=1, frames=3, seed=0, height=32, width=32)
    results = tmp_path / "results.json"
    gt = json.loads(annotations.read_text())
    results.write_text(json.dumps([{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
                                    "segmentations": a["segmentations"]} for a in gt["annotations"]]))
    assert main(["eval", "--gt", str(annotations), "--pred", str(results), "--json", str(tmp_path / "ap.json")]) == 0
    save_pretrained(DVIS(tiny_config()), tmp_path / "model", {"training.yaml": "x: 1\n"})
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", {"w": torch.zeros(3)})
    metrics = MetricsLog(tmp_path / "metrics.csv", 0)
    metrics.write({"iteration": 1, "loss": 1.0})
    metrics.write({"iteration": 2, "loss": 0.5})
    MetricsLog(tmp_path / "metrics.csv", 1)  # rewrites the file atomically, keeping iteration 1

    files = [out / "results.json", out / ".partial" / "clip.json", out / "clip.mp4", tmp_path / "vps" / "pred.json",
             *(tmp_path / "vps" / "pan_pred" / "clip").iterdir(), tmp_path / "ap.json",
             *(tmp_path / "model").iterdir(), tmp_path / "checkpoints" / "last.pt", tmp_path / "metrics.csv",
             *(p for p in (tmp_path / "set").rglob("*") if p.is_file())]
    assert len(files) > 12
    assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in files} == \
        {str(p.relative_to(tmp_path)): oct(0o640) for p in files}
    folders = [tmp_path / "set", *(p for p in (tmp_path / "set").rglob("*") if p.is_dir())]
    assert {oct(_mode(p)) for p in folders} == {oct(0o750)}
