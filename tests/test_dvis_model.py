"""The DVIS model on the small released-format checkpoint: modes, batching, windows, bad inputs."""

from __future__ import annotations

import copy

import pytest
import torch

from dvis.compat.checkpoint import load_official, read_state_dict
from dvis.compat.release_config import dvis_config_from_official
from dvis.errors import CheckpointError, ConfigError, InputError
from dvis.modeling.dvis import DVIS
from golden_files import DATA

GOLDEN = DATA / "e2e" / "e2e_small.pt"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope="module")
def model(golden):
    config = dvis_config_from_official(golden["config"]["values"])
    config.inference.thing_classes = (0, 1, 2)
    model = DVIS(config).eval()
    load_official(model, golden["model"])
    return model


@pytest.fixture(scope="module")
def frames(golden):
    return golden["inputs"]["frames_uint8_tchw"]


def assert_same_instances(a, b, score_tol=1e-4, pixels=20):
    pairs_a = {(int(i), int(l)): k for k, (i, l) in enumerate(zip(a.ids, a.labels))}
    pairs_b = {(int(i), int(l)): k for k, (i, l) in enumerate(zip(b.ids, b.labels))}
    assert set(pairs_a) == set(pairs_b)
    for key, k in pairs_a.items():
        assert abs(float(a.scores[k]) - float(b.scores[pairs_b[key]])) <= score_tol
        assert int((a.masks[k] != b.masks[pairs_b[key]]).sum()) <= pixels


@pytest.mark.parametrize("mode", ["online", "offline", "minvis"])
def test_window_size_does_not_change_results(model, frames, mode):
    reference = model([frames], mode=mode, window_size=8)[0]
    for window in (1, 3, 5):
        assert_same_instances(model([frames], mode=mode, window_size=window)[0], reference)


@pytest.mark.parametrize("mode", ["online", "offline", "minvis"])
def test_overlapped_matching_gives_the_same_pass_1_and_solves_while_the_next_window_segments(model, frames, mode,
                                                                                              monkeypatch):
    """track_windows(overlap=True) (the CUDA default) queues window k+1's segmenter before solving
    window k's Hungarian chain; every stored array and logit sum equals the sequential order's."""
    from dataclasses import replace

    import dvis.modeling.pipeline as pipeline

    config = replace(model.config.inference, mode=mode, window_size=3)
    pixel_values, _ = model.preprocess([frames, frames.flip(-1)])
    events = []
    segment, orders = model.segment, pipeline.PendingMatch.orders
    monkeypatch.setattr(model, "segment", lambda *a: events.append("segment") or segment(*a))
    monkeypatch.setattr(pipeline.PendingMatch, "orders", lambda self, *a: events.append("solve") or orders(self, *a))
    runs = {}
    for overlap in (False, True):
        events.clear()
        windows = (pixel_values[:, s:s + 3] for s in range(0, pixel_values.shape[1], 3))
        stores = [pipeline.MemoryStores() for _ in range(2)]
        runs[overlap] = pipeline.track_windows(model, windows, config, stores, overlap=overlap), list(events)
    windows = -(-pixel_values.shape[1] // 3)
    assert windows >= 3
    assert runs[False][1] == ["segment", "solve"] * windows
    assert runs[True][1] == ["segment"] + ["segment", "solve"] * (windows - 1) + ["solve"]
    for sequential, overlapped in zip(runs[False][0], runs[True][0]):
        assert torch.equal(sequential.logit_sum, overlapped.logit_sum)
        assert sequential.stores.stores.keys() == overlapped.stores.stores.keys()
        for name, store in sequential.stores.stores.items():
            assert torch.equal(store.read(0, store.num_frames), overlapped.stores[name].read(0, store.num_frames)), name


def test_batch_of_videos_equals_one_video_at_a_time(model, frames):
    other = frames.flip(-1).roll(1, dims=0)
    for mode in ("online", "offline"):
        batched = model([frames, other], mode=mode)
        for video, result in zip((frames, other), batched):
            assert_same_instances(result, model([video], mode=mode)[0])


def test_batch_with_different_frame_sizes_pads_to_a_common_size(model, frames):
    smaller = frames[:, :, :40, :70].contiguous()
    results = model([frames, smaller], mode="online")
    assert results[1].masks.shape[-2:] == (40, 70)
    assert_same_instances(results[1], model([smaller], mode="online")[0], pixels=40)


def test_semi_online_with_a_full_clip_equals_offline(model, frames):
    offline = model([frames], mode="offline")[0]
    assert_same_instances(model([frames], mode="semi-online", clip_len=len(frames))[0], offline)
    per_frame = model([frames], mode="semi-online", clip_len=1)[0]
    assert per_frame.masks.shape == offline.masks.shape


@pytest.mark.parametrize("mode, tracker_masks", [("online", True), ("offline", False), ("semi-online", False)])
def test_tracker_computes_mask_logits_only_where_they_are_used(model, frames, mode, tracker_masks, monkeypatch):
    """Offline and semi-online replace the tracker's masks by the refiner's: neither the in-memory
    nor the streaming path runs the tracker's mask einsum there."""
    import dvis.modeling.tracker as tracker_module
    from dvis.inference.predictor import VideoPredictor

    calls = []
    real = tracker_module.mask_logits
    monkeypatch.setattr(tracker_module, "mask_logits", lambda *a: calls.append(1) or real(*a))
    model([frames], mode=mode, clip_len=3, window_size=3)
    assert bool(calls) == tracker_masks
    calls.clear()
    VideoPredictor(model, window_size=3, clip_len=3)(frames.permute(0, 2, 3, 1).numpy(), mode=mode)
    assert bool(calls) == tracker_masks


def test_modes_disagree_where_they_should(model, frames):
    """MinVIS, online and offline are different methods: their instance sets differ here."""
    results = {m: model([frames], mode=m)[0] for m in ("minvis", "online", "offline")}
    keys = {m: {(int(i), int(l)) for i, l in zip(r.ids, r.labels)} for m, r in results.items()}
    assert keys["online"] != keys["offline"]
    assert keys["minvis"] != keys["online"]


def test_outputs_come_back_at_the_requested_size(model, frames):
    result = model([frames], [(87, 135)], mode="online", task="vss")[0]
    assert result.masks.shape == (len(frames), 87, 135)
    result = model([frames], [(87, 135)], mode="online", task="vps")[0]
    assert result.masks.dtype == torch.int32 and result.masks.shape == (len(frames), 87, 135)


def test_bad_inputs_are_refused_with_the_shape(model, frames):
    with pytest.raises(InputError, match=r"video 0 must be a \(T, 3, H, W\) uint8 RGB tensor, got \(3, 58, 90\)"):
        model([frames[0]])
    with pytest.raises(InputError, match="same number of frames"):
        model([frames, frames[:4]])
    with pytest.raises(ConfigError, match="mode must be one of"):
        model([frames], mode="realtime")
    with pytest.raises(ConfigError, match="semi-online mode needs clip_len"):
        model([frames], mode="semi-online")
    with pytest.raises(InputError, match="output sizes"):
        model([frames], [(1, 1), (2, 2)])
    with pytest.raises(InputError, match="no videos"):
        model([])


def test_non_finite_or_non_pixel_videos_are_refused_naming_the_frame(model, frames):
    as_float = frames.float()
    assert torch.equal(model([as_float])[0].masks, model([frames])[0].masks)  # float 0..255 is accepted
    as_float[2, 1, 5, 7] = float("nan")
    with pytest.raises(InputError, match="video 0: frame 2 has NaN or infinite pixel values"):
        model([as_float])
    as_float[2, 1, 5, 7] = float("inf")
    with pytest.raises(InputError, match="frame 2 has NaN or infinite"):
        model([frames, as_float])
    with pytest.raises(InputError, match="video 0 must be uint8 .* got dtype torch.int64"):
        model([frames.long()])


def online_model(golden) -> DVIS:
    config = dvis_config_from_official(golden["config"]["values"], meta_architecture="DVIS_online")
    return DVIS(config).eval()


def test_online_checkpoint_into_offline_model_says_use_online(model, golden):
    online_state = {k: v for k, v in golden["model"].items() if not k.startswith("refiner.")}
    with pytest.raises(CheckpointError, match=r"online checkpoint \(no refiner\.\*\).*use mode=online"):
        load_official(copy.deepcopy(model), online_state)
    load_official(online_model(golden), online_state)  # and it loads where it belongs


def test_offline_checkpoint_into_online_model_is_refused(golden):
    with pytest.raises(CheckpointError, match="offline checkpoint.*without a refiner"):
        load_official(online_model(golden), golden["model"])


def test_segmenter_only_checkpoint_says_use_minvis(golden):
    segmenter_state = {k: v for k, v in golden["model"].items() if k.startswith(("backbone.", "sem_seg_head."))}
    with pytest.raises(CheckpointError, match="segmenter-only.*use mode=minvis"):
        load_official(online_model(golden), segmenter_state)


def test_missing_unexpected_and_misshaped_keys_are_listed(golden):
    target = online_model(golden)
    state = {k: v for k, v in golden["model"].items() if not k.startswith("refiner.")}
    broken = dict(state)
    del broken["tracker.decoder_norm.weight"]
    broken["tracker.extra.weight"] = torch.zeros(1)
    broken["tracker.class_embed.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        load_official(target, broken)
    message = str(err.value)
    assert "missing keys (1)" in message and "tracker.decoder_norm.weight" in message
    assert "unexpected keys (1)" in message and "tracker.extra.weight" in message
    assert "tracker.class_embed.bias: expected (6,), found (3,)" in message
    with pytest.raises(CheckpointError, match=r"(?s)unexpected keys.*something\.else"):
        load_official(target, {**state, "something.else": torch.zeros(1)})


def test_checkpoint_files_wrapped_plain_legacy_and_hostile(tmp_path, golden, model, frames):
    reference = model([frames], mode="offline")[0]
    legacy = {k.replace("refiner.", "offline_tracker.", 1): v for k, v in golden["model"].items()}
    path = tmp_path / "model_final.pth"
    torch.save({"model": legacy, "iteration": 3}, path)
    fresh = DVIS(model.config).eval()
    info = load_official(fresh, path)
    assert info.has_refiner and info.backbone == "resnet"
    assert_same_instances(fresh([frames], mode="offline")[0], reference, score_tol=1e-6, pixels=0)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    hostile = tmp_path / "hostile.pth"
    torch.save({"model": Payload()}, hostile)
    with pytest.raises(CheckpointError, match="not a readable weights-only checkpoint"):
        read_state_dict(hostile)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        read_state_dict(garbage)
