"""Whole released checkpoints (R50 online/offline, Swin-L offline) fill the DVIS model exactly.

A fake checkpoint with exactly the inventory's keys and shapes (meta tensors: no memory) goes
through the project's loader into the full-size model built from the inventory's config:
0 missing, 0 unexpected, and the parameter counts of the release.
"""

from __future__ import annotations

import json

import pytest
import torch

from dvis.compat.checkpoint import describe, load_official
from dvis.compat.release_config import dvis_config_from_official
from dvis.modeling.dvis import DVIS
from golden_files import DATA
from test_official_layout import _fake_official

LAYOUTS = sorted((DATA / "official_layout").glob("official_keys_*.json"))


def fake_checkpoint(path, config) -> dict[str, torch.Tensor]:
    layout = json.loads(path.read_text())
    fake = _fake_official(path, config.segmenter)
    for key, shape in layout["keys"].items():
        if key.startswith(("tracker.", "refiner.", "criterion.")):
            fake[key] = torch.zeros(shape, device="meta")
    assert len(fake) == layout["param_counts"]["num_state_dict_keys"]
    return fake


@pytest.mark.parametrize("path", LAYOUTS, ids=[p.stem for p in LAYOUTS])
def test_released_layout_loads_with_nothing_missing_or_left_over(path):
    layout = json.loads(path.read_text())
    config = dvis_config_from_official(layout["config"])
    with torch.device("meta"):
        model = DVIS(config)
    checkpoint = fake_checkpoint(path, config)
    info = load_official(model, {"model": checkpoint, "iteration": 0}, source=path.name, assign=True)
    assert info.has_refiner == (model.refiner is not None) == ("offline" in path.stem)
    counts = layout["param_counts"]

    def count(module):
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    assert count(model.tracker) == counts["tracker_params"]
    assert count(model.refiner) == counts["refiner_params"]
    assert model.segmenter.num_parameters() + count(model.tracker) + count(model.refiner) == counts["total_params"]


def test_describe_recognises_the_variants():
    for path in LAYOUTS:
        keys = json.loads(path.read_text())["keys"]
        info = describe({k: torch.empty(shape, device="meta") for k, shape in keys.items()})
        assert info.backbone == ("swin" if "swinl" in path.stem else "resnet")
        assert info.backbone_name == ("Swin-L" if "swinl" in path.stem else "ResNet-50")
        assert info.has_refiner == ("offline" in path.stem)
        assert info.has_tracker and info.has_segmenter


def test_describe_names_other_backbones_by_their_structure():
    """ResNet depth from the bottleneck blocks per stage, Swin size from embed width and depths."""
    r101 = {f"backbone.res{s}.{b}.conv3.weight": torch.empty(1, device="meta")
            for s, blocks in zip((2, 3, 4, 5), (3, 4, 23, 3)) for b in range(blocks)}
    assert describe({"backbone.stem.conv1.weight": torch.empty(1), **r101}).backbone_name == "ResNet-101"
    r101.pop("backbone.res4.22.conv3.weight")
    odd = describe({"backbone.stem.conv1.weight": torch.empty(1), **r101}).backbone_name
    assert odd == "ResNet (bottleneck blocks per stage [3, 4, 22, 3])"
    swin_b = {f"backbone.layers.{i}.blocks.{j}.norm1.weight": torch.empty(1, device="meta")
              for i, blocks in enumerate((2, 2, 18, 2)) for j in range(blocks)}
    swin_b["backbone.patch_embed.proj.weight"] = torch.empty(128, 3, 4, 4, device="meta")
    assert describe(swin_b).backbone_name == "Swin-B"
    swin_b["backbone.patch_embed.proj.weight"] = torch.empty(64, 3, 4, 4, device="meta")
    assert describe(swin_b).backbone_name == "Swin (embed 64, depths [2, 2, 18, 2])"
    assert describe({"tracker.x": torch.empty(1)}).backbone_name is None
