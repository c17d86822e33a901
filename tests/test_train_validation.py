"""Validation during training: scores logged, the best iteration's weights exported, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from dvis.errors import ConfigError
from test_train_common import make_config, one_thread, saved_model, synthetic_root  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def validation_root(tmp_path_factory):
    from dvis.data.synthetic import generate

    root = tmp_path_factory.mktemp("validation") / "val"
    generate(root, videos=2, frames=6, seed=11, height=64, width=64, objects=(2, 3), occlusion="heavy")
    return root


def validated_config(synthetic_root, validation_root, out, init, **solver):
    return make_config("tracker", synthetic_root, out, init,
                       validation={"annotations": str(validation_root / "annotations.json"), "period": 2},
                       solver={"max_iter": 4, "steps": [3], "batch_size": 2, "clips_per_gpu": 2,
                               "checkpoint_period": 2, "log_period": 1, "base_lr": 1e-3, **solver})


def test_validation_scores_every_period_and_exports_the_best(synthetic_root, validation_root, tmp_path, monkeypatch):
    from dvis.training import validation
    from dvis.training.loop import train

    scores = iter([0.2, 0.5])  # iteration 2, then 4 (the end): 4 is the best
    original = validation.Validator.__call__

    def scripted(self, model):
        real = original(self, model)  # the real evaluation runs (and must give numbers)
        assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in real.values()), real
        return {**real, "AP": next(scores)}

    monkeypatch.setattr(validation.Validator, "__call__", scripted)
    init = saved_model(tmp_path / "init", ("segmenter",))
    run = train(validated_config(synthetic_root, validation_root, tmp_path / "o", init), "tracker", progress=False)
    rows = (run.output_dir / "validation.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,AP,AP50") and [r.split(",")[0] for r in rows[1:]] == ["2", "4"]
    best = json.loads((run.output_dir / "best" / "validation.json").read_text())
    assert best["iteration"] == 4 and best["AP"] == 0.5
    exported = load_file(str(run.model_dir / "model.safetensors"))
    best_weights = load_file(str(run.output_dir / "best" / "model.safetensors"))
    assert exported.keys() == best_weights.keys() and all(torch.equal(exported[k], best_weights[k]) for k in exported)
    assert "selected_iteration: 4" in (run.model_dir / "training.yaml").read_text()
    assert (run.output_dir / "model_last" / "model.safetensors").is_file()


def test_an_earlier_better_iteration_is_the_exported_model(synthetic_root, validation_root, tmp_path, monkeypatch):
    from dvis.training import validation
    from dvis.training.loop import train

    scores = iter([0.6, 0.1])
    monkeypatch.setattr(validation.Validator, "__call__",
                        lambda self, model: {"AP": next(scores), "AP50": 0.0, "AP75": 0.0, "AP_light": 0.0,
                                             "AP_medium": 0.0, "AP_heavy": 0.0})
    init = saved_model(tmp_path / "init", ("segmenter",))
    run = train(validated_config(synthetic_root, validation_root, tmp_path / "o", init), "tracker", progress=False)
    exported = load_file(str(run.model_dir / "model.safetensors"))
    last = load_file(str(run.output_dir / "model_last" / "model.safetensors"))
    assert "selected_iteration: 2" in (run.model_dir / "training.yaml").read_text()
    assert any(not torch.equal(exported[k], last[k]) for k in exported if k.startswith("tracker."))


def test_resume_keeps_the_log_up_to_the_checkpoint(synthetic_root, validation_root, tmp_path):
    from dvis.training.loop import Trainer

    init = saved_model(tmp_path / "init", ("segmenter",))
    config = validated_config(synthetic_root, validation_root, tmp_path / "o", init)
    Trainer(config, "tracker", progress=False).train(stop_at=2)
    log = tmp_path / "o" / "validation.csv"
    log.write_text(log.read_text() + "3,0.9,0,0,0,0,0\n")  # a row written after the checkpoint, then killed
    Trainer(config, "tracker", resume=True, progress=False).train()
    assert [r.split(",")[0] for r in log.read_text().splitlines()[1:]] == ["2", "4"]


@pytest.mark.parametrize("key, value, message", [
    ("period", 0, "validation.period = 0"),
    ("mode", "fast", "validation.mode = 'fast'"),
    ("metric", "mAP", "validation.metric = 'mAP'"),
])
def test_bad_validation_settings_name_the_key(synthetic_root, tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        make_config("tracker", synthetic_root, tmp_path / "o", None, validation={key: value})


def test_a_missing_validation_file_is_a_config_error(synthetic_root, tmp_path):
    from dvis.training.loop import Trainer

    init = saved_model(tmp_path / "init", ("segmenter",))
    config = make_config("tracker", synthetic_root, tmp_path / "o", init,
                         validation={"annotations": str(tmp_path / "nothing.json")})
    with pytest.raises(ConfigError, match="nothing.json: file not found"):
        Trainer(config, "tracker", progress=False)


def test_validation_frames_are_decoded_only_by_the_process_that_validates(validation_root):
    """Every DDP rank builds a Validator, but only rank 0 calls it: the others never decode frames."""
    from dvis.training.config import ValidationConfig
    from dvis.training.validation import Validator

    validator = Validator(ValidationConfig(annotations=str(validation_root / "annotations.json")), "tracker")
    assert validator._videos is None  # built: ground truth loaded, no frame decoded
    videos = validator.videos
    assert len(videos) == 2 and videos[0][1].shape == (6, 64, 64, 3) and videos[0][1].dtype == "uint8"
    assert validator.videos is videos  # decoded once
