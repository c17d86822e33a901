"""``VideoPredictor.stream`` segments frames in ``window_size`` windows by default, as the
whole-video call does. With one segmenter and tracker call per frame (the old default,
``window=1``) their fixed per-call cost made streaming 2-9x slower than the call on the same frames."""

from __future__ import annotations

import torch

from dvis.inference.predictor import VideoPredictor
from inference_helpers import random_frames, tiny_model


def _segmenter_batches(model) -> tuple[list[int], object]:
    batches = []
    handle = model.segmenter.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    return batches, handle


def test_stream_segments_in_the_same_windows_as_the_whole_video_call():
    model = tiny_model(num_classes=3)
    frames = random_frames(11)
    predictor = VideoPredictor(model, window_size=4)
    batches, handle = _segmenter_batches(model)
    try:
        predictor(frames, mode="online")
        whole_video = list(batches)
        batches.clear()
        streamed = list(predictor.stream(frames, mode="online"))
    finally:
        handle.remove()
    assert whole_video == [4, 4, 3]
    assert batches == whole_video, "stream() must not call the segmenter once per frame by default"
    assert [item.index for item in streamed] == list(range(11))


def test_stream_results_do_not_depend_on_the_window():
    model = tiny_model(num_classes=3)
    frames = random_frames(7)
    predictor = VideoPredictor(model, window_size=4)
    default = list(predictor.stream(frames, mode="online", score_threshold=0.0))
    per_frame = list(predictor.stream(frames, mode="online", score_threshold=0.0, window=1))
    assert len(default) == len(per_frame) == 7
    assert any(len(item.ids) for item in default)
    for a, b in zip(default, per_frame):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.labels, b.labels)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
        assert torch.equal(a.masks, b.masks)
