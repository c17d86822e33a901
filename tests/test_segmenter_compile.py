"""``compile``: the segmenter's network through torch.compile, reachable from the predictor and
``dvis segment --compile``. torch.compile itself is replaced by a spy here (a real inductor compile
takes minutes on 2 cores; benchmarks/segmenter_speed.py --compile runs the real one)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dvis.cli import main
from dvis.errors import InputError
from dvis.inference.predictor import VideoPredictor

from inference_helpers import random_frames, save_tiny_model, tiny_model, write_video


class CountingNetwork(nn.Module):
    def __init__(self, network):
        super().__init__()
        self.network, self.calls = network, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.network(*args, **kwargs)


@pytest.fixture
def spy_compile(monkeypatch):
    compiled: list[CountingNetwork] = []

    def fake_compile(module):
        compiled.append(CountingNetwork(module))
        return compiled[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    return compiled


def test_compiled_segmenter_runs_the_compiled_network_with_the_same_weights(spy_compile):
    model = tiny_model(num_classes=3)
    keys = list(model.state_dict())
    frames = random_frames(4, height=64, width=64)
    reference = VideoPredictor(model, mode="online", window_size=2)(frames)
    model.segmenter.compiled = True
    assert model.segmenter.compiled and spy_compile[0].network is model.segmenter.mask2former
    assert list(model.state_dict()) == keys  # the compiled wrapper is not a submodule
    got = VideoPredictor(model, mode="online", window_size=2)(frames)
    assert spy_compile[0].calls == 2  # one call per window
    assert got.rles == reference.rles and torch.equal(got.scores, reference.scores)
    model.segmenter.compiled = False
    assert not model.segmenter.compiled


def test_predictor_compile_option(spy_compile):
    model = tiny_model(num_classes=3)
    VideoPredictor(model, mode="online", compile=True)
    assert model.segmenter.compiled and len(spy_compile) == 1


def test_compile_needs_the_mask2former_segmenter():
    from dvis.modeling.dvis import DVIS

    class Custom(nn.Module):
        pass

    model = tiny_model(num_classes=3)
    custom = DVIS(model.config, segmenter=Custom())
    with pytest.raises(InputError, match="compile=True needs a Mask2FormerSegmenter, got Custom"):
        VideoPredictor(custom, mode="online", compile=True)


def test_dvis_segment_compile_flag(tmp_path, spy_compile):
    model_dir = save_tiny_model(tmp_path / "tiny", num_classes=6)
    write_video(tmp_path / "walk.mp4", random_frames(5, height=32, width=48))
    assert main(["segment", str(tmp_path / "walk.mp4"), "--model", str(model_dir), "--mode", "online",
                 "--out", str(tmp_path / "out"), "--quiet", "--no-render", "--compile"]) == 0
    assert len(spy_compile) == 1 and spy_compile[0].calls >= 1
    assert json.loads((tmp_path / "out" / "results.json").read_text())


def test_resume_does_not_mix_compiled_and_eager_results(tmp_path, spy_compile, capsys):
    """Compiled kernels reassociate float sums, so --compile is part of what a partial records."""
    model_dir = save_tiny_model(tmp_path / "tiny", num_classes=6)
    write_video(tmp_path / "walk.mp4", random_frames(3, height=32, width=48))
    args = ["segment", str(tmp_path / "walk.mp4"), "--model", str(model_dir), "--mode", "online",
            "--out", str(tmp_path / "out"), "--no-render"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--compile"]) == 0
    assert spy_compile[0].calls >= 1  # recomputed, not taken from the eager run's partial
    assert "compile False (partial) vs True (this run)" in capsys.readouterr().err
