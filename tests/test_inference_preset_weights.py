"""A release preset really loads a released checkpoint: ``load_model(preset, weights=FILE)`` fills
the full-size model with the file's tensors.

The fake checkpoint has exactly the key names and shapes of the released DVIS_Online_R50 (OVIS)
checkpoint (``tests/data/official_layout``), in the release's container (``{"model": ...}``).
Each tensor varies along its first dimension and is stored as a broadcast view of that one row of
values, so the file stays small while the model is filled at full size.
"""

from __future__ import annotations

import json

import pytest
import torch

from dvis.compat.official import convert_segmenter_state_dict
from golden_files import split_segmenter_keys
from dvis.inference.registry import load_model
from dvis.compat.presets import build_config, get_preset
from golden_files import DATA

PRESET = "dvis-online-ovis-r50"
LAYOUT = DATA / "official_layout" / "official_keys_ovis_r50_online.json"
DECODER = "mask2former.model.transformer_module.decoder"


def released_checkpoint(generator: torch.Generator) -> dict[str, torch.Tensor]:
    layout = json.loads(LAYOUT.read_text())
    assert layout["config"]["config_file"] == get_preset(PRESET).config_file
    state = {}
    for key, shape in layout["keys"].items():
        row = torch.randn(shape[0], generator=generator)
        state[key] = row.view(-1, *[1] * (len(shape) - 1)).expand(shape)
    return state


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    state = released_checkpoint(torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("release") / "DVIS_online_R50_ovis.pth"
    torch.save({"model": state, "iteration": 19999}, path)
    assert path.stat().st_size < 20_000_000  # broadcast views: the file holds one row per tensor
    return load_model(PRESET, weights=path, device="cpu"), state


def test_the_preset_model_is_built_as_the_release(loaded):
    model, _ = loaded
    assert model.config == build_config(PRESET)
    assert model.config.inference.mode == "online" and model.refiner is None
    assert not model.training


def test_tracker_tensors_equal_the_files(loaded):
    model, state = loaded
    ours = model.tracker.state_dict()
    released = {k.removeprefix("tracker."): v for k, v in state.items() if k.startswith("tracker.")}
    assert released and set(ours) == set(released)
    assert all(torch.equal(ours[k], released[k]) for k in released)


def test_segmenter_tensors_equal_the_files(loaded):
    model, state = loaded
    ours = model.segmenter.state_dict()
    expected = convert_segmenter_state_dict(split_segmenter_keys(state), model.config.segmenter)
    assert set(ours) == set(expected)
    assert all(torch.equal(ours[k], expected[k]) for k in expected)


def test_known_release_names_land_on_the_right_tensors(loaded):
    """Independent of the converter: a few mappings written out by hand."""
    model, state = loaded
    ours = model.segmenter.state_dict()
    stem = "mask2former.model.pixel_level_module.encoder.embedder.embedder.convolution.weight"
    assert torch.equal(ours[stem], state["backbone.stem.conv1.weight"])
    assert torch.equal(ours["mask2former.class_predictor.weight"], state["sem_seg_head.predictor.class_embed.weight"])
    fused = state["sem_seg_head.predictor.transformer_self_attention_layers.0.self_attn.in_proj_weight"]
    q, k, v = fused.chunk(3)
    assert not torch.equal(q, k)
    for name, part in zip("qkv", (q, k, v)):
        assert torch.equal(ours[f"{DECODER}.layers.0.self_attn.{name}_proj.weight"], part)
    assert ours["mask2former.class_predictor.weight"].shape[0] == 26  # 25 OVIS classes + no-object
