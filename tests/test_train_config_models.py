"""Every shipped training YAML gives its stage model: the sections a stage needs are in the file or
come from the previous stage's folder (``model_sections``, no weights read; models are built on the
meta device), and the release configs' models have the released checkpoints' shapes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from test_train_common import one_thread, synthetic_root  # noqa: F401 (fixtures)
from test_train_config import CONFIGS, RELEASE, preset_for

from dvis.cli import main
from dvis.errors import CheckpointError
from dvis.modeling.dvis import DVIS
from dvis.modeling.io import CONFIG_FILE, WEIGHTS_FILE, config_from_dict, config_to_dict
from dvis.compat.presets import build_config
from dvis.training.config import InitConfig, TrainConfig, load_train_config
from dvis.training.model import PARTS, model_sections

GROUPS = sorted({p.parent for p in RELEASE} | {CONFIGS / "synthetic"})


def meta_model(sections: dict) -> DVIS:
    """The model of these sections, with meta tensors (sizes only, no memory, no weights)."""
    with torch.device("meta"):
        return DVIS(config_from_dict(sections))


def stage_folder(directory: Path, sections: dict) -> Path:
    """A model folder as the previous stage exports it; the weights file is a stand-in (not read)."""
    directory.mkdir(parents=True)
    (directory / CONFIG_FILE).write_text(yaml.safe_dump(config_to_dict(config_from_dict(sections))))
    (directory / WEIGHTS_FILE).write_bytes(b"")
    return directory


def full(sections: dict) -> dict:
    """Sections with every default filled in (as a model folder's config.yaml holds them)."""
    return config_to_dict(config_from_dict(sections))


def with_init(config: TrainConfig, folder: Path | None) -> TrainConfig:
    return dataclasses.replace(config, init=InitConfig(model=None if folder is None else str(folder)))


def shapes(model: DVIS, parts: tuple[str, ...]) -> dict[str, tuple]:
    return {f"{part}.{k}": tuple(v.shape) for part in parts for k, v in getattr(model, part).state_dict().items()}


def check_stage(config: TrainConfig, stage: str) -> dict:
    sections = model_sections(config, stage)
    model = meta_model(sections)
    for part in PARTS[stage]:
        assert getattr(model, part) is not None, part
    return sections


@pytest.mark.parametrize("group", GROUPS, ids=lambda p: "/".join(p.parts[-2:]) if p.name != "synthetic" else "synthetic")
def test_each_stage_config_builds_on_the_previous_stage_folder(group, tmp_path):
    """segmenter.yaml -> its folder -> tracker.yaml -> its folder -> refiner.yaml, as `dvis train` chains them."""
    segmenter = check_stage(load_train_config(group / "segmenter.yaml"), "segmenter")
    tracker_config = load_train_config(group / "tracker.yaml")
    absent = tmp_path / "absent"
    for stage in ("tracker", "refiner"):  # the inherited sections need the previous stage's folder
        config = with_init(load_train_config(group / f"{stage}.yaml"), absent)
        with pytest.raises(CheckpointError, match=f"init.model = {absent}: missing {CONFIG_FILE}"):
            model_sections(config, stage)
    tracker = check_stage(with_init(tracker_config, stage_folder(tmp_path / "seg", segmenter)), "tracker")
    refiner_config = with_init(load_train_config(group / "refiner.yaml"), stage_folder(tmp_path / "trk", tracker))
    refiner = check_stage(refiner_config, "refiner")
    # the frozen parts are the ones the earlier stages trained
    assert full(tracker)["segmenter"] == full(refiner)["segmenter"] == full(segmenter)["segmenter"]
    assert full(refiner)["tracker"] == full(tracker)["tracker"]


@pytest.mark.parametrize("path", [p for p in RELEASE if p.stem != "refiner"], ids=lambda p: "/".join(p.parts[-3:]))
def test_release_segmenter_and_tracker_configs_build_without_an_init_folder(path):
    """They start from a released checkpoint (init.release_checkpoint), so the file has every section."""
    config = load_train_config(path)
    assert config.init.model is None and (path.stem == "segmenter" or config.init.release_checkpoint)
    check_stage(config, path.stem)


@pytest.mark.parametrize("path", RELEASE, ids=lambda p: "/".join(p.parts[-3:]))
def test_release_stage_models_have_the_released_checkpoints_shapes(path, tmp_path):
    stage, config = path.stem, load_train_config(path)
    if stage == "refiner":
        tracker = model_sections(load_train_config(path.with_name("tracker.yaml")), "tracker")
        config = with_init(config, stage_folder(tmp_path / "trk", tracker))
    ours = meta_model(model_sections(config, stage))
    released = meta_model(config_to_dict(build_config(preset_for(path))))
    assert shapes(ours, PARTS[stage]) == shapes(released, PARTS[stage])


def test_synthetic_segmenter_config_needs_no_init_folder():
    check_stage(load_train_config(CONFIGS / "synthetic" / "segmenter.yaml"), "segmenter")


def test_release_tracker_config_gets_past_the_model_sections_on_the_command_line(synthetic_root, capsys, tmp_path):
    """`dvis train tracker --config configs/ovis/r50/tracker.yaml` builds its model and stops only at the
    missing released checkpoint (data paths pointed at a small synthetic set)."""
    overrides = [f"data.root={synthetic_root}", "data.annotations=annotations.json", "data.image_root=JPEGImages",
                 f"init.release_checkpoint={tmp_path / 'minvis_ovis_r50.pth'}", f"output_dir={tmp_path / 'out'}",
                 "data.num_workers=0"]
    argv = ["train", "tracker", "--config", str(CONFIGS / "ovis" / "r50" / "tracker.yaml"), *overrides,
            "--device", "cpu", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "minvis_ovis_r50.pth" in err and "not found" in err and "model.segmenter" not in err
