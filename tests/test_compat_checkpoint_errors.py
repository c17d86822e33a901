"""One clear error for a released checkpoint that does not fit the model (the project's rule: "every key must be
consumed and every parameter filled; otherwise a clear error lists the missing and unexpected keys
and says which variant the file looks like").

Full-size released layouts (tests/data/official_layout) are faked with meta tensors, so these
checks cost no memory. Each error must name the file, the file's variant and backbone, what to do,
and list the problems of every part (segmenter, tracker, refiner) at once, truncated with counts.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from dvis.compat.checkpoint import PER_PART_LISTED, load_official
from dvis.compat.release_config import dvis_config_from_official
from dvis.errors import CheckpointError
from dvis.modeling.dvis import DVIS
from golden_files import DATA
from test_release_layouts_full_model import LAYOUTS, fake_checkpoint

LAYOUT = {p.stem.split("_ovis_")[1]: p for p in LAYOUTS}  # r50_online, r50_offline, swinl_offline
SOURCE = "model_final.pth"


def _config(name: str, arch: str | None = None):
    return dvis_config_from_official(json.loads(LAYOUT[name].read_text())["config"], arch)


def _meta_model(name: str, arch: str | None = None) -> DVIS:
    with torch.device("meta"):
        return DVIS(_config(name, arch))


@pytest.fixture(scope="module")
def models() -> dict[str, DVIS]:
    return {"offline": _meta_model("r50_offline"), "online": _meta_model("r50_online"),
            "segmenter-only": _meta_model("r50_offline", "MinVIS")}


@pytest.fixture(scope="module")
def checkpoints() -> dict[str, dict[str, torch.Tensor]]:
    return {name: fake_checkpoint(path, _config(name)) for name, path in LAYOUT.items()}


def _error(model: DVIS, state: dict[str, torch.Tensor]) -> str:
    with pytest.raises(CheckpointError) as info:
        load_official(model, {"model": state}, source=SOURCE, assign=True)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: this is ")
    return message


def _count(message: str, title: str) -> int:
    match = re.search(rf"\n  {title} \((\d+)[);]", message)
    assert match, f"no '{title}' section in:\n{message}"
    return int(match.group(1))


def _num_keys(module: torch.nn.Module) -> int:
    return len(module.state_dict())


def test_swin_l_checkpoint_into_r50_model(models, checkpoints):
    message = _error(models["offline"], checkpoints["swinl_offline"])
    head = message.splitlines()[0]
    assert "this is an offline checkpoint (segmenter + tracker + refiner), Swin-L backbone" in head
    assert "built with ResNet-50; use a Swin-L config/preset" in head
    assert "the model is an offline model (segmenter + tracker + refiner), ResNet-50 backbone" in message
    assert "backbone.stem.conv1.weight" in message and "backbone.patch_embed.proj.weight" in message
    assert "sem_seg_head.predictor.query_feat.weight: expected (100, 256), found (200, 256)" in message
    # hundreds of keys differ; each part lists at most PER_PART_LISTED and counts the rest
    missing, unexpected = _count(message, "missing keys"), _count(message, "unexpected keys")
    assert missing > 200 and unexpected > 300
    assert f"... and {missing - PER_PART_LISTED} more backbone.* keys" in message
    assert f"... and {unexpected - PER_PART_LISTED} more backbone.* keys" in message
    assert len(message.splitlines()) < 4 * PER_PART_LISTED


def test_online_checkpoint_into_offline_model(models, checkpoints):
    message = _error(models["offline"], checkpoints["r50_online"])
    assert message.splitlines()[0] == (
        f"{SOURCE}: this is an online checkpoint (no refiner.*), ResNet-50 backbone; "
        "the model expects refiner.* weights; use mode=online (build the model from that config)")
    refiner_keys = _num_keys(models["offline"].refiner)
    assert _count(message, "missing keys") == refiner_keys
    assert f"... and {refiner_keys - PER_PART_LISTED} more refiner.* keys" in message
    assert "unexpected keys" not in message and "shape mismatches" not in message


def test_offline_checkpoint_into_segmenter_only_model(models, checkpoints):
    message = _error(models["segmenter-only"], checkpoints["r50_offline"])
    head = message.splitlines()[0]
    assert "this is an offline checkpoint (segmenter + tracker + refiner), ResNet-50 backbone" in head
    assert "the model was built without a refiner; build it with an offline config" in head
    assert "the model is a segmenter-only (MinVIS) model, ResNet-50 backbone" in message
    tracker, refiner = _num_keys(models["online"].tracker), _num_keys(models["offline"].refiner)
    assert (f"unexpected keys ({tracker + refiner}; by part: tracker.* {tracker}, refiner.* {refiner})"
            in message)
    assert "missing keys" not in message


def test_segmenter_only_checkpoint_into_online_model(models, checkpoints):
    segmenter = {k: v for k, v in checkpoints["r50_online"].items() if k.startswith(("backbone.", "sem_seg_head."))}
    message = _error(models["online"], segmenter)
    assert "segmenter-only (MinVIS / Mask2Former) checkpoint (no tracker.*), ResNet-50 backbone; " \
           "the model expects tracker.* weights; use mode=minvis" in message.splitlines()[0]
    assert _count(message, "missing keys") == _num_keys(models["online"].tracker)


def test_a_file_without_segmenter_weights_is_a_partial_checkpoint(models, checkpoints):
    tracker_only = {k: v for k, v in checkpoints["r50_online"].items() if k.startswith("tracker.")}
    message = _error(models["online"], tracker_only)
    assert message.splitlines()[0] == (
        f"{SOURCE}: this is a partial checkpoint (tracker.* only, no backbone.* / sem_seg_head.*)")
    assert re.search(r"missing keys \(\d+; by part: backbone\.\* \d+, sem_seg_head\.\* \d+\)", message)


def test_an_extra_key_is_the_only_problem_listed(models, checkpoints):
    message = _error(models["online"], {**checkpoints["r50_online"], "tracker.extra.weight": torch.zeros(2)})
    assert message.splitlines()[0] == f"{SOURCE}: this is an online checkpoint (no refiner.*), ResNet-50 backbone"
    assert message.endswith("unexpected keys (1):\n    tracker.extra.weight")
    assert "use mode" not in message


def test_a_misshaped_tensor_is_listed_with_both_shapes(models, checkpoints):
    state = dict(checkpoints["r50_offline"])
    state["refiner.class_embed.weight"] = torch.zeros(7, 256, device="meta")
    message = _error(models["offline"], state)
    assert message.endswith("shape mismatches (1):\n    refiner.class_embed.weight: expected (26, 256), found (7, 256)")


def test_problems_of_every_part_come_in_one_error(models, checkpoints):
    """Before, the segmenter was checked (and loaded) first and the tracker's problems never shown."""
    state = dict(checkpoints["r50_offline"])
    del state["sem_seg_head.predictor.query_embed.weight"]
    del state["tracker.decoder_norm.weight"]
    state["refiner.class_embed.bias"] = torch.zeros(3, device="meta")
    state["backbone.res2.0.conv1.weight"] = torch.zeros(1, device="meta")
    state["junk.key"] = torch.zeros(1)
    message = _error(models["offline"], state)
    assert "missing keys (2; by part: sem_seg_head.* 1, tracker.* 1)" in message
    assert "sem_seg_head.predictor.query_embed.weight" in message and "tracker.decoder_norm.weight" in message
    assert "shape mismatches (2; by part: backbone.* 1, refiner.* 1)" in message
    assert "refiner.class_embed.bias: expected (26,), found (3,)" in message
    assert "unexpected keys (1):\n    junk.key" in message


def test_nothing_is_loaded_when_any_part_does_not_fit():
    """The segmenter is not half-loaded when only the refiner's weights are wrong."""
    golden = torch.load(DATA / "e2e" / "e2e_small.pt", weights_only=True)
    model = DVIS(dvis_config_from_official(golden["config"]["values"]))
    before = copy.deepcopy(model.state_dict())
    broken = dict(golden["model"])
    broken["refiner.class_embed.bias"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"refiner\.class_embed\.bias: expected \(6,\), found \(1,\)"):
        load_official(model, broken)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    load_official(model, golden["model"])  # the control: the intact file does change the weights
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())
