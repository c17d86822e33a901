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
        info = describe({k: torch.zeros(0) for k in keys})
        assert info.backbone == ("swin" if "swinl" in path.stem else "resnet")
        assert info.has_refiner == ("offline" in path.stem)
        assert info.has_tracker
