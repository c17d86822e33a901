"""Training configs: the shipped YAMLs (release values, synthetic sizes), overrides, and the errors
for unknown keys, missing data and checkpoints of another stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from test_train_common import config_dict, make_config, saved_model, one_thread, synthetic_root  # noqa: F401 (fixtures)

from dvis.cli import main
from dvis.errors import CheckpointError, ConfigError, DataError
from dvis.modeling.dvis import DVIS
from dvis.modeling.io import config_from_dict
from dvis.compat.presets import get_preset
from dvis.training.checkpoint import load_checkpoint, save_checkpoint
from dvis.training.config import SolverConfig, apply_overrides, load_train_config, train_config_from_dict
from dvis.training.data import build_video_dataset
from dvis.training.loop import accumulation_steps, lr_factor, param_groups
from dvis.training.model import build_stage_model

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RELEASE = sorted(p for p in CONFIGS.glob("*/*/*.yaml") if p.parts[-3] != "synthetic")
STAGE_PRESET = {"segmenter": "minvis", "tracker": "dvis-online", "refiner": "dvis-offline"}


def preset_for(path: Path):
    dataset, backbone, stage = path.parts[-3], path.parts[-2], path.stem
    suffix = "r50-720p" if (dataset, backbone) == ("vipseg", "r50") else backbone
    return get_preset(f"{STAGE_PRESET[stage]}-{dataset}-{suffix}")


def test_release_configs_exist_for_every_dataset_backbone_and_stage():
    names = {(p.parts[-3], p.parts[-2], p.stem) for p in RELEASE}
    assert names == {(d, b, s) for d in ("ovis", "ytvis19", "ytvis21", "vipseg") for b in ("r50", "swinl")
                     for s in ("segmenter", "tracker", "refiner")}


@pytest.mark.parametrize("path", RELEASE, ids=lambda p: "/".join(p.parts[-3:]))
def test_release_config_reproduces_the_release_hyper_parameters(path):
    config = load_train_config(path)
    train = preset_for(path).train
    s, d, loss = config.solver, config.data, config.loss
    assert config.stage == path.stem
    assert (s.base_lr, s.weight_decay, s.clip_grad_norm, s.batch_size) == (1e-4, 0.05, 0.01, 8)
    assert (s.max_iter, s.steps, s.gamma) == (train["SOLVER.MAX_ITER"], list(train["SOLVER.STEPS"]), 0.1)
    assert s.backbone_multiplier == train["SOLVER.BACKBONE_MULTIPLIER"] and s.amp == "auto"
    assert (d.num_frames, d.frame_range, d.reverse) == (
        train["INPUT.SAMPLING_FRAME_NUM"], train["INPUT.SAMPLING_FRAME_RANGE"], train["INPUT.REVERSE_AGU"])
    if path.stem == "tracker":
        assert d.num_frames == 5
    if path.stem == "refiner":
        assert d.num_frames == 21 and d.reverse
    assert d.augmentation.short_sides == list(train["INPUT.MIN_SIZE_TRAIN"])
    assert d.augmentation.max_size == train["INPUT.MAX_SIZE_TRAIN"]
    assert d.augmentation.crop == (list(train["INPUT.CROP.SIZE"]) if train["INPUT.CROP.ENABLED"] else None)
    assert (loss.class_weight, loss.mask_weight, loss.dice_weight, loss.no_object_weight) == (2.0, 5.0, 5.0, 0.1)
    assert (loss.num_points, loss.oversample_ratio, loss.importance_sample_ratio) == (12544, 3.0, 0.75)
    preset = preset_for(path)
    for section in config.model.values():
        if "num_classes" in section:
            assert section["num_classes"] == preset.num_classes
    if "segmenter" in config.model:
        assert config.model["segmenter"]["num_queries"] == preset.num_queries
    pseudo = d.pseudo_videos  # DATASETS.TRAIN (coco2<dataset>_train, <dataset>_train): COCO pseudo videos mixed in
    if len(train["DATASETS.TRAIN"]) == 1:
        assert pseudo is None
    else:
        assert train["DATASETS.DATASET_TYPE"] == ("image_instance", "video_instance")
        assert pseudo.category_map == {"coco2ytvis2019_train": "ytvis19", "coco2ytvis2021_train": "ytvis21",
                                       "coco2ovis_train": "ovis"}[train["DATASETS.TRAIN"][0]]
        assert (pseudo.ratio, pseudo.video_ratio) == tuple(train["DATASETS.DATASET_RATIO"])
        assert pseudo.max_size == train["INPUT.PSEUDO.MAX_SIZE_TRAIN"] and train["INPUT.PSEUDO.AUGMENTATIONS"] == (
            "rotation",)
        assert tuple(train["INPUT.PSEUDO.MIN_SIZE_TRAIN"]) == tuple(train["INPUT.MIN_SIZE_TRAIN"])
        assert train["INPUT.PSEUDO.CROP.ENABLED"] == train["INPUT.CROP.ENABLED"]


@pytest.mark.parametrize("stage", ["segmenter", "tracker", "refiner"])
def test_synthetic_configs_are_small(stage):
    config = load_train_config(CONFIGS / "synthetic" / f"{stage}.yaml")
    if stage != "segmenter":  # deterministic clips: the segmenter cache applies (the segmenter stage has none)
        assert config.data.augmentation is None
    seg = load_train_config(CONFIGS / "synthetic" / "segmenter.yaml").model["segmenter"]
    sections = {"segmenter": seg, **{k: v for k, v in config.model.items() if k != "inference"}}
    if stage == "refiner":
        sections["tracker"] = load_train_config(CONFIGS / "synthetic" / "tracker.yaml").model["tracker"]
    model = DVIS(config_from_dict(sections))
    size_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
    assert size_mb < 20  # the shipped demo model (all parts, float32) must stay under 20 MB


def test_unknown_keys_are_named_with_close_matches(tmp_path):
    values = config_dict("segmenter", tmp_path, tmp_path / "out")
    values["solver"]["max_iters"] = 3
    with pytest.raises(ConfigError, match=r"unknown config key 'solver.max_iters'.*solver\.max_iter"):
        train_config_from_dict(values, "f.yaml")
    values = config_dict("segmenter", tmp_path, tmp_path / "out")
    values["model"]["segmenter"]["hiden_dim"] = 3
    with pytest.raises(ConfigError, match=r"model.segmenter.hiden_dim.*model\.segmenter\.hidden_dim"):
        train_config_from_dict(values, "f.yaml")
    with pytest.raises(ConfigError, match=r"'solver.lr'.*solver\.base_lr|'solver.lr'"):
        apply_overrides({}, ["solver.lr=0.1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["solver.max_iter"])
    values = config_dict("segmenter", tmp_path, tmp_path / "out")
    values["solver"]["max_iter"] = "many"
    with pytest.raises(ConfigError, match="solver.max_iter = 'many'"):
        train_config_from_dict(values, "f.yaml")


def test_overrides_set_nested_values_and_lists(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict("tracker", tmp_path, tmp_path / "o")))
    config = load_train_config(path, ["solver.steps=[10, 20]", "model.tracker.num_layers=3", "data.augmentation=null",
                                      "loss.num_points=99", "cache.enabled=off", "solver.amp=on"])
    assert config.cache.enabled == "off" and config.solver.amp == "on"  # YAML's on/off booleans
    assert config.solver.steps == [10, 20] and config.model["tracker"]["num_layers"] == 3
    assert config.data.augmentation is None and config.loss.num_points == 99


def test_missing_dataset_paths_are_data_errors(tmp_path, synthetic_root):
    config = make_config("segmenter", tmp_path / "nowhere", tmp_path / "o")
    with pytest.raises(DataError, match="data.annotations: .*nowhere.*does not exist"):
        build_video_dataset(config.data)
    config = make_config("segmenter", synthetic_root, tmp_path / "o", data={"image_root": "frames"})
    with pytest.raises(DataError, match="data.image_root"):
        build_video_dataset(config.data)


def test_cli_reports_config_and_data_errors(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict("segmenter", tmp_path / "missing", tmp_path / "o")))
    assert main(["train", "segmenter", "--config", str(path), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "segmenter", "--config", str(path), "solver.max_iterz=2"]) == 2
    assert "unknown config key 'solver.max_iterz'" in capsys.readouterr().err


def test_checkpoints_and_models_of_another_stage_are_refused(tmp_path, synthetic_root):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"stage": "tracker", "iteration": 3})
    with pytest.raises(CheckpointError, match="tracker-stage checkpoint.*training the refiner stage"):
        load_checkpoint(path, "refiner")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable training checkpoint"):
        load_checkpoint(path, "refiner")
    segmenter_only = saved_model(tmp_path / "seg", ("segmenter",))
    config = make_config("refiner", synthetic_root, tmp_path / "o", init=segmenter_only)
    with pytest.raises(CheckpointError, match="is a segmenter-stage model .*no tracker.*output of the tracker stage"):
        build_stage_model(config, "refiner")
    config = make_config("refiner", synthetic_root, tmp_path / "o", init=segmenter_only,
                         model={"tracker": config_dict("tracker", tmp_path, tmp_path)["model"]["tracker"],
                                "refiner": config_dict("refiner", tmp_path, tmp_path)["model"]["refiner"]})
    with pytest.raises(CheckpointError, match="is a segmenter-stage model .*no tracker"):
        build_stage_model(config, "refiner")
    seg = config_dict("segmenter", tmp_path, tmp_path)["model"]["segmenter"]
    no_init = make_config("tracker", synthetic_root, tmp_path / "o", model={
        "segmenter": seg, "tracker": config_dict("tracker", tmp_path, tmp_path)["model"]["tracker"]})
    with pytest.raises(ConfigError, match="frozen, trained segmenter: set init.model"):
        build_stage_model(no_init, "tracker")


def test_frozen_section_must_match_the_init_model(tmp_path, synthetic_root):
    init = saved_model(tmp_path / "seg", ("segmenter",))
    seg = config_dict("segmenter", tmp_path, tmp_path)["model"]["segmenter"]
    config = make_config("tracker", synthetic_root, tmp_path / "o", init=init,
                         model={"segmenter": {**seg, "num_queries": 9}, "tracker": config_dict(
                             "tracker", tmp_path, tmp_path)["model"]["tracker"]})
    with pytest.raises(ConfigError, match="model.segmenter differs from init.model's segmenter in num_queries"):
        build_stage_model(config, "tracker")


def test_effective_batch_and_schedule():
    solver = SolverConfig(batch_size=8, clips_per_gpu=2, steps=[10, 20], warmup_iters=0)
    assert accumulation_steps(solver, world_size=2) == 2
    assert accumulation_steps(solver, world_size=4) == 1
    with pytest.raises(ConfigError, match="not a multiple of clips_per_gpu x world_size"):
        accumulation_steps(solver, world_size=3)
    assert [lr_factor(i, solver) for i in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    warm = SolverConfig(warmup_iters=10, warmup_factor=0.5, steps=[])
    assert lr_factor(0, warm) == 0.5 and lr_factor(5, warm) == pytest.approx(0.75) and lr_factor(10, warm) == 1


def test_param_groups_follow_the_release(tmp_path):
    model = DVIS(config_from_dict({"segmenter": config_dict("segmenter", tmp_path, tmp_path)["model"]["segmenter"]}))
    solver = SolverConfig()
    groups = param_groups(model.segmenter, solver, model.segmenter.backbone)
    by_name = {g["name"]: g for g in groups}
    backbone_ids = {id(p) for p in model.segmenter.backbone.parameters()}
    for group in groups:
        (param,) = group["params"]
        assert param.requires_grad
        assert group["lr"] == pytest.approx(1e-5 if id(param) in backbone_ids else 1e-4)
    norms = [g for n, g in by_name.items() if "layernorm" in n.lower() or "norm" in n.split(".")[-2].lower()]
    assert norms and all(g["weight_decay"] == 0.0 for g in norms)
    assert any(g["weight_decay"] == 0.05 for g in groups)
    embeddings = [g for n, g in by_name.items() if "queries_embedder" in n or "level_embed" in n]
    assert all(g["weight_decay"] == 0.0 for g in embeddings if isinstance(
        dict(model.segmenter.named_modules()).get(g["name"].rsplit(".", 1)[0]), torch.nn.Embedding))


def test_cli_trains_and_resumes(tmp_path, synthetic_root, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict("segmenter", synthetic_root, tmp_path / "o")))
    assert main(["train", "segmenter", "--config", str(path), "solver.max_iter=2", "--no-progress"]) == 0
    assert "trained segmenter for 2 iterations" in capsys.readouterr().out
    assert main(["train", "segmenter", "--config", str(path), "solver.max_iter=3", "--resume", "--no-progress"]) == 0
    assert load_checkpoint(tmp_path / "o" / "checkpoints" / "last.pt", "segmenter")["iteration"] == 3
    tracker = tmp_path / "t.yaml"  # a tracker run pointed at the segmenter run's folder
    tracker.write_text(yaml.safe_dump(config_dict("tracker", synthetic_root, tmp_path / "o",
                                                  saved_model(tmp_path / "init", ("segmenter",)))))
    capsys.readouterr()
    assert main(["train", "tracker", "--config", str(tracker), "--resume", "--no-progress"]) == 2
    assert "segmenter-stage checkpoint, but you are training the tracker stage" in capsys.readouterr().err
    values = config_dict("segmenter", synthetic_root, tmp_path / "o")
    path.write_text(yaml.safe_dump({**values, "stage": "segmenter"}))
    assert main(["train", "refiner", "--config", str(path), "--no-progress"]) == 2
    assert "this config is for the segmenter stage, not refiner" in capsys.readouterr().err


def test_cli_stage_choices_match_the_trainer():
    from dvis.training.commands import STAGES as CLI_STAGES
    from dvis.training.config import STAGES

    assert CLI_STAGES == STAGES
