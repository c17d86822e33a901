"""Any object with the Segmenter interface plugs into DVIS (here: a scripted fake)."""

from __future__ import annotations

import torch
from torch import nn

from dvis.modeling.dvis import DVIS, DVISConfig, InferenceConfig
from dvis.modeling.segmenter import Segmenter, SegmenterConfig, SegmenterOutput


class ScriptedSegmenter(nn.Module):
    """Frame t shows the same 4 objects with its queries in a shuffled order.

    Object j is class j, owns the j-th horizontal band of the image and has a distinct embedding.
    """

    def __init__(self, permutations: list[torch.Tensor]) -> None:
        super().__init__()
        self.permutations = permutations
        self.frame = 0
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the module a device
        torch.manual_seed(0)
        self.embeds = torch.randn(4, 8)

    def preprocess(self, frames_uint8):
        return frames_uint8.float(), tuple(frames_uint8.shape[-2:])

    def forward(self, pixel_values, return_aux=False):
        outs = []
        for _ in range(pixel_values.shape[0]):
            perm = self.permutations[self.frame]
            self.frame += 1
            logits = torch.full((4, 5), -10.0)
            logits[torch.arange(4), torch.arange(4)] = 10.0
            masks = torch.full((4, 8, 8), -5.0)
            for j in range(4):
                masks[j, 2 * j:2 * j + 2] = 5.0
            outs.append((logits[perm], masks[perm], self.embeds[perm]))
        logits, masks, embeds = (torch.stack(x) for x in zip(*outs))
        features = torch.zeros(pixel_values.shape[0], 8, 8, 8)
        return SegmenterOutput(logits, masks, embeds, features)


def test_a_custom_segmenter_drives_minvis_tracking():
    torch.manual_seed(1)
    permutations = [torch.arange(4)] + [torch.randperm(4) for _ in range(5)]
    fake = ScriptedSegmenter(permutations)
    assert isinstance(fake, Segmenter)
    config = DVISConfig(SegmenterConfig(backbone="resnet", num_classes=4), inference=InferenceConfig(mode="minvis", max_num=4))
    model = DVIS(config, segmenter=fake).eval()
    video = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    result = model([video], window_size=2)[0]
    # every object keeps one track id across the shuffles, and its label equals its band
    assert sorted(result.labels.tolist()) == [0, 1, 2, 3]
    for track, label, masks in zip(result.ids, result.labels, result.masks):
        assert int(track) == int(label)  # slot order of frame 0 = class order
        band = torch.zeros(32, 32, dtype=torch.bool)
        band[8 * int(label):8 * int(label) + 8] = True
        assert all(torch.equal(m, band) for m in masks), f"object {int(label)} lost its mask"
