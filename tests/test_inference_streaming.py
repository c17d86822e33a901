"""The streaming, disk-spilled predictor equals the in-memory DVIS.forward path, in every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvis.errors import InputError
from dvis.inference.predictor import VideoPredictor
from dvis.inference.spill import FrameSpill
from dvis.inference.transforms import resize_video
from inference_helpers import random_frames, tiny_model

MODES = ("minvis", "online", "offline", "semi-online")
OPTIONS = dict(window_size=4, clip_len=3, object_mask_threshold=0.2, max_num=4)


@pytest.fixture(scope="module")
def model():
    return tiny_model(num_classes=3)


@pytest.fixture(scope="module")
def frames():
    return random_frames(11)


def in_memory(model, frames, **options):
    config = model.config.inference
    video = resize_video(frames, config.min_size_test, config.max_size_test)
    return model([video], output_sizes=[frames[0].shape[:2]], **{**OPTIONS, **options})[0]


@pytest.mark.parametrize("mode", MODES)
def test_vis_equals_in_memory_path(model, frames, mode, tmp_path):
    reference = in_memory(model, frames, mode=mode, task="vis")
    got = VideoPredictor(model, spill_dir=tmp_path, **OPTIONS)(frames, mode=mode, task="vis")
    assert reference.masks.any(), "the test needs non-empty masks"
    assert torch.equal(got.ids, reference.ids) and torch.equal(got.labels, reference.labels)
    assert torch.allclose(got.scores, reference.scores, rtol=0, atol=1e-6)
    assert torch.equal(got.masks, reference.masks)
    assert got.num_frames == len(frames) and len(got.rles[0]) == len(frames)
    assert not any(tmp_path.iterdir()), "the spill folder must be removed after the call"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("task", ["vps", "vss"])
def test_vps_and_vss_equal_in_memory_path(model, frames, mode, task):
    reference = in_memory(model, frames, mode=mode, task=task)
    got = VideoPredictor(model, **OPTIONS)(frames, mode=mode, task=task)
    assert torch.equal(got.masks, reference.masks)
    if task == "vps":
        assert got.segments_infos == reference.segments_infos and got.ids == reference.ids
        assert reference.segments_infos, "the test needs at least one panoptic segment"
    else:
        assert got.masks.shape == (len(frames), *frames[0].shape[:2])


def test_float16_spill_differs_only_on_a_few_boundary_pixels(model, frames):
    reference = in_memory(model, frames, mode="offline", task="vis")
    got = VideoPredictor(model, spill_dtype="float16", **OPTIONS)(frames, mode="offline", task="vis")
    assert torch.equal(got.ids, reference.ids) and torch.equal(got.labels, reference.labels)
    assert (got.masks != reference.masks).float().mean() < 0.01


def test_stream_yields_one_result_per_frame_with_class_so_far(model, frames):
    predictor = VideoPredictor(model, **OPTIONS)
    items = list(predictor.stream(iter(frames), mode="online", score_threshold=0.0, window=3))
    assert [item.index for item in items] == list(range(len(frames)))
    assert all(item.masks.shape[1:] == frames[0].shape[:2] for item in items)
    assert all(item.masks.flatten(1).any(1).all() for item in items)  # only visible tracks
    with predictor.analyse(frames, mode="online") as analysis:  # the last frame's class so far = video's
        video_scores, video_labels = analysis.probs[:, :-1].max(-1)
    last = items[-1]
    assert len(last.ids) > 0
    assert torch.equal(last.labels, video_labels[last.ids])
    assert torch.allclose(last.scores, video_scores[last.ids], atol=1e-6)


def test_stream_masks_equal_the_tracker_masks(model, frames):
    """Frame t's mask of track i is the online mask of query slot i at frame t."""
    predictor = VideoPredictor(model, **OPTIONS)
    reference = in_memory(model, frames, mode="online", task="vis", max_num=15)
    items = list(predictor.stream(frames, mode="online", score_threshold=0.0))
    checked = 0
    for item in items:
        for track, mask in zip(item.ids.tolist(), item.masks):
            row = (reference.ids == track).nonzero()[0, 0]
            assert torch.equal(mask, reference.masks[row, item.index])
            checked += 1
    assert checked > 0


def test_stream_refuses_offline_modes(model, frames):
    with pytest.raises(InputError, match="online"):
        next(VideoPredictor(model).stream(frames, mode="offline"))
    with pytest.raises(InputError, match="online"):
        next(VideoPredictor(model, mode="offline").stream(frames, mode="semi-online", clip_len=2))


def same_stream(a, b) -> bool:
    return len(a) == len(b) and all(
        x.index == y.index and torch.equal(x.ids, y.ids) and torch.equal(x.labels, y.labels)
        and torch.equal(x.masks, y.masks) for x, y in zip(a, b))


def test_stream_of_an_offline_model_runs_online(model, frames):
    predictor = VideoPredictor(model, **OPTIONS)
    assert predictor.config.mode == "offline" and predictor.stream_mode() == "online"
    default = list(predictor.stream(frames, score_threshold=0.0))
    assert same_stream(default, list(predictor.stream(frames, mode="online", score_threshold=0.0)))
    assert not same_stream(default, list(predictor.stream(frames, mode="minvis", score_threshold=0.0)))
    assert VideoPredictor(model, mode="minvis").stream_mode() == "minvis"  # an online default is kept


def test_stream_of_a_segmenter_only_model_runs_minvis(frames):
    segmenter_only = tiny_model(num_classes=3)
    segmenter_only.tracker = segmenter_only.refiner = None
    predictor = VideoPredictor(segmenter_only, **OPTIONS)
    assert predictor.config.mode == "offline" and predictor.stream_mode() == "minvis"
    default = list(predictor.stream(frames[:4], score_threshold=0.0))
    assert default and same_stream(default, list(predictor.stream(frames[:4], mode="minvis", score_threshold=0.0)))
    with pytest.raises(InputError, match="needs a tracker"):
        next(predictor.stream(frames, mode="online"))


def test_frame_spill_round_trip(tmp_path):
    spill = FrameSpill(tmp_path / "x.bin", (2, 3))
    data = np.arange(5 * 6, dtype=np.float32).reshape(5, 2, 3)
    spill.append(data[:2])
    spill.append(torch.from_numpy(data[2:]))
    assert spill.num_frames == 5 and (tmp_path / "x.bin").stat().st_size == data.nbytes
    assert np.array_equal(spill.read(1, 4).numpy(), data[1:4])
    assert np.array_equal(spill.read_all().numpy(), data)
    with pytest.raises(InputError, match=r"expected frames"):
        spill.append(np.zeros((1, 3, 2), np.float32))
    spill.close()
    assert not (tmp_path / "x.bin").exists()


def test_mixed_frame_sizes_in_a_list_are_rejected(model):
    frames = random_frames(2) + random_frames(1, height=32)
    from dvis.errors import DataError

    with pytest.raises(DataError, match="frame 2 is 56x32 but frame 0 is 56x40"):
        VideoPredictor(model)(frames, mode="online")
