"""Released checkpoint layouts (R50 online/offline, Swin-L offline) convert into the segmenter exactly.

A fake official state dict with exactly the inventory's segmenter keys, shapes and dtypes is
converted and strictly loaded into the full-size segmenter built from the inventory's config (on
the meta device: no memory, no time). Parameter counts must equal the release's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dvis.compat.official import convert_segmenter_state_dict
from golden_files import segmenter_keys_from_layout
from dvis.compat.release_config import segmenter_config_from_official
from dvis.modeling.segmenter import Mask2FormerSegmenter, SegmenterConfig

DATA = Path(__file__).parent / "data" / "official_layout"
LAYOUTS = ["official_keys_ovis_r50_online.json", "official_keys_ovis_r50_offline.json",
           "official_keys_ovis_swinl_offline.json"]
PRESETS = {"official_keys_ovis_r50_online.json": "r50", "official_keys_ovis_r50_offline.json": "r50",
           "official_keys_ovis_swinl_offline.json": "swin-l"}


def _relative_position_index(window: int) -> torch.Tensor:
    """Swin's index (window^2, window^2): (dy + w - 1) * (2w - 1) + (dx + w - 1), written out here."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def _fake_official(path: Path, config: SegmenterConfig) -> dict[str, torch.Tensor]:
    """Zeros (meta tensors) under every segmenter key of the inventory; the index buffers are real."""
    fake = {}
    for key, (shape, dtype) in segmenter_keys_from_layout(path).items():
        if key.endswith("relative_position_index"):
            fake[key] = _relative_position_index(config.swin_window_size)
            assert tuple(fake[key].shape) == shape, key
        else:
            fake[key] = torch.zeros(shape, dtype=dtype, device="meta")
    return fake


def _layout(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_converts_with_nothing_missing_or_left_over(name: str) -> None:
    layout = _layout(name)
    config = segmenter_config_from_official(layout["config"])
    converted = convert_segmenter_state_dict(_fake_official(DATA / name, config), config)
    with torch.device("meta"):
        model = Mask2FormerSegmenter(config)
    result = model.load_state_dict(converted, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    counts = layout["param_counts"]
    assert model.num_parameters() == counts["segmenter_params (backbone+sem_seg_head)"]
    parts = {"backbone_params": "mask2former.model.pixel_level_module.encoder.",
             "pixel_decoder_params": "mask2former.model.pixel_level_module.decoder."}
    frozen = {id(p) for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    by_part = {part: sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix) and id(p) not in frozen)
               for part, prefix in parts.items()}
    assert by_part == {part: counts[part] for part in parts}


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_config_is_the_preset(name: str) -> None:
    config = segmenter_config_from_official(_layout(name)["config"])
    assert config == SegmenterConfig.preset(PRESETS[name], num_classes=25)


def test_layout_frozen_bn_buffers_are_the_batchnorm_statistics() -> None:
    """The release's FrozenBN buffers (counted in backbone_buffers) become the BatchNorm's four tensors."""
    layout = _layout("official_keys_ovis_r50_offline.json")
    config = segmenter_config_from_official(layout["config"])
    with torch.device("meta"):
        model = Mask2FormerSegmenter(config)
    bn_numel = sum(t.numel() for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)
                   for name, t in [*m.named_parameters(), *m.named_buffers()] if name != "num_batches_tracked")
    assert bn_numel == layout["param_counts"]["backbone_buffers"]
