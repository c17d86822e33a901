"""Our own model folder format: config.yaml + model.safetensors round trip and its errors."""

from __future__ import annotations

import pytest
import torch
import yaml

from dvis.errors import CheckpointError, ConfigError
from dvis.modeling.dvis import DVIS, DVISConfig, InferenceConfig
from dvis.modeling.io import config_from_dict, config_to_dict, load_pretrained, save_pretrained
from dvis.modeling.refiner import RefinerConfig
from dvis.modeling.segmenter import SegmenterConfig
from dvis.modeling.tracker import TrackerConfig


def tiny_config() -> DVISConfig:
    small = dict(num_classes=3, hidden_dim=32, feedforward_dim=64, num_heads=4, num_layers=1, mask_dim=32)
    segmenter = SegmenterConfig(
        backbone="resnet", num_classes=3, hidden_dim=32, mask_dim=32, convs_dim=32, num_heads=4,
        dim_feedforward=64, dec_layers=2, num_queries=5, enc_layers=1, resnet_stem_out_channels=8,
        resnet_res2_out_channels=16, resnet_width_per_group=4,
    )
    return DVISConfig(segmenter, TrackerConfig(**small), RefinerConfig(**small), InferenceConfig(max_num=3, min_size_test=64))


def test_round_trip_gives_the_same_model_and_outputs(tmp_path):
    torch.manual_seed(0)
    model = DVIS(tiny_config()).eval()
    save_pretrained(model, tmp_path / "m", {"README.md": "# card"})
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    video = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    a, b = model([video])[0], loaded([video])[0]
    assert torch.equal(a.scores, b.scores) and torch.equal(a.masks, b.masks)
    assert (tmp_path / "m" / "README.md").read_text() == "# card"
    assert not list((tmp_path / "m").glob("*.tmp"))
    assert config_from_dict(config_to_dict(model.config)) == model.config


def test_bad_folders_and_configs_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="missing config.yaml"):
        load_pretrained(tmp_path)
    model = DVIS(tiny_config())
    save_pretrained(model, tmp_path / "m")
    values = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    values["tracker"]["num_layerz"] = 2
    with pytest.raises(ConfigError, match="unknown key.*'tracker'.*num_layerz"):
        config_from_dict(values)
    values = config_to_dict(model.config)
    values["tracker"]["num_layers"] = 2
    (tmp_path / "m" / "config.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_pretrained(tmp_path / "m")
