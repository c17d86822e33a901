"""Tracker and refiner against the released code's outputs (goldens made by running the released code, DVIS_GOLDEN)."""

from __future__ import annotations

import pytest
import torch

from dvis.compat.release_config import refiner_config_from_release_kwargs, tracker_config_from_release_kwargs
from dvis.modeling.refiner import TemporalRefiner
from dvis.modeling.tracker import ReferringTracker
from golden_files import DATA, golden_files, ids, require_file, torch_golden_with

FILES = golden_files(sorted((DATA / "tracker_refiner").glob("*.pt")), "DVIS_GOLDEN",
                     is_format=torch_golden_with("config", "tracker_state_dict", "refiner_state_dict", "inputs",
                                                 "tracker_window1", "tracker_frame_forward", "refiner"))
TOL = 1e-4


def to_btq(x: torch.Tensor) -> torch.Tensor:
    """Released (B, C, T, Q) embeddings -> ours (B, T, Q, C)."""
    return x.permute(0, 2, 3, 1)


def masks_btq(x: torch.Tensor) -> torch.Tensor:
    """Released (B, Q, T, H, W) masks -> ours (B, T, Q, H, W)."""
    return x.permute(0, 2, 1, 3, 4)


def assert_close(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    err = (ours - theirs).abs().max().item()
    assert err <= TOL, f"{name}: max abs error {err:.3g} > {TOL}"


def build(golden: dict) -> tuple[ReferringTracker, TemporalRefiner]:
    config = golden["config"]
    tracker = ReferringTracker(tracker_config_from_release_kwargs(config)).eval()
    tracker.load_state_dict(golden["tracker_state_dict"], strict=True)
    refiner = TemporalRefiner(refiner_config_from_release_kwargs(config)).eval()
    refiner.load_state_dict(golden["refiner_state_dict"], strict=True)
    return tracker, refiner


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_tracker_and_refiner_match_release(path):
    require_file(path)
    check_against_release(torch.load(path, weights_only=True), path)


def test_a_golden_that_does_not_match_fails():
    golden = torch.load(FILES[0], weights_only=True)
    golden["refiner"]["pred_logits"] = golden["refiner"]["pred_logits"] + 1e-3
    with pytest.raises(AssertionError, match="refiner pred_logits"):
        check_against_release(golden, "perturbed")
    golden = torch.load(FILES[0], weights_only=True)
    golden["tracker_window2"]["match_indices"][1] = golden["tracker_window2"]["match_indices"][1].flip(0)
    with pytest.raises(AssertionError, match="match indices"):
        check_against_release(golden, "perturbed")


@pytest.mark.parametrize("part", ["tracker_window1", "refiner"])
def test_a_golden_with_a_missing_aux_output_fails(part):
    """zip() would silently skip an aux output the golden lacks; the counts are compared first."""
    golden = torch.load(FILES[0], weights_only=True)
    golden[part]["aux_pred_logits"] = list(golden[part]["aux_pred_logits"])[:-1]
    with pytest.raises(AssertionError, match=r"aux_logits, golden has"):
        check_against_release(golden, "perturbed")


@torch.no_grad()
def check_against_release(golden: dict, path) -> None:
    tracker, refiner = build(golden)
    inputs = golden["inputs"]
    windows = sorted(int(k[len("frame_embeds_window"):]) for k in inputs if k.startswith("frame_embeds_window"))
    assert windows, f"{path}: no frame_embeds_window* inputs"
    state, embeds, features, frames = None, [], [], []
    for w in windows:
        frame_embeds = to_btq(inputs[f"frame_embeds_window{w}"])
        mask_features = inputs[f"mask_features_window{w}"]
        output, state = tracker(frame_embeds, mask_features, state, return_aux=True)
        expected = golden[f"tracker_window{w}"]
        assert_close(f"window {w} pred_logits", output.pred_logits, expected["pred_logits"])
        assert_close(f"window {w} pred_masks", output.pred_masks, masks_btq(expected["pred_masks"]))
        assert_close(f"window {w} pred_embds", output.pred_embds, to_btq(expected["pred_embds"]))
        assert len(output.aux_logits) == len(expected["aux_pred_logits"]), (
            f"window {w}: {len(output.aux_logits)} aux_logits, golden has {len(expected['aux_pred_logits'])}")
        for i, (ours, theirs) in enumerate(zip(output.aux_logits, expected["aux_pred_logits"])):
            assert_close(f"window {w} aux_logits[{i}]", ours, theirs)
        expected_indices = torch.stack(list(expected["match_indices"]))
        assert torch.equal(output.match_indices[0], expected_indices), f"window {w} match indices differ"
        embeds.append(output.pred_embds)
        features.append(mask_features)
        frames.append(frame_embeds)

    memory = tracker.frame_forward(torch.cat(frames, dim=1))
    assert_close("frame_forward", memory, to_btq(golden["tracker_frame_forward"]))

    mask_window = int(golden["config"].get("refiner_window", 0)) or None
    refined = refiner(torch.cat(embeds, 1), memory, torch.cat(features, 1), return_aux=True, mask_window=mask_window)
    expected = golden["refiner"]
    assert_close("refiner pred_logits", refined.pred_logits, expected["pred_logits"])
    assert_close("refiner pred_masks", refined.pred_masks, masks_btq(expected["pred_masks"]))
    assert_close("refiner pred_embds", refined.pred_embds, to_btq(expected["pred_embds"]))
    assert len(refined.aux_logits) == len(expected["aux_pred_logits"]), (
        f"refiner: {len(refined.aux_logits)} aux_logits, golden has {len(expected['aux_pred_logits'])}")
    for i, (ours, theirs) in enumerate(zip(refined.aux_logits, expected["aux_pred_logits"])):
        assert_close(f"refiner aux_logits[{i}]", ours, theirs)


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
@torch.no_grad()
def test_any_window_split_gives_the_same_tracking(path):
    """Streaming: every split of the video into windows (down to 1 frame) equals one call."""
    require_file(path)
    golden = torch.load(path, weights_only=True)
    tracker, _ = build(golden)
    inputs = golden["inputs"]
    keys = sorted(k for k in inputs if k.startswith("frame_embeds_window"))
    frames = torch.cat([to_btq(inputs[k]) for k in keys], dim=1)
    features = torch.cat([inputs[k.replace("frame_embeds", "mask_features")] for k in keys], dim=1)
    whole, _ = tracker(frames, features)
    for size in (1, 2, 5):
        state, parts = None, []
        for start in range(0, frames.shape[1], size):
            out, state = tracker(frames[:, start:start + size], features[:, start:start + size], state)
            parts.append(out)
        assert state.num_frames == frames.shape[1]
        assert torch.equal(torch.cat([p.match_indices for p in parts], 1), whole.match_indices)
        for field in ("pred_logits", "pred_masks", "pred_embds"):
            joined = torch.cat([getattr(p, field) for p in parts], 1)
            assert (joined - getattr(whole, field)).abs().max() <= 1e-5, f"window {size}: {field}"


def test_golden_env_var_keeps_only_files_of_this_format_and_fails_when_there_are_none(tmp_path, monkeypatch):
    import shutil

    shutil.copy(FILES[0], tmp_path / "mine.pt")
    shutil.copy(DATA / "e2e" / "e2e_small.pt", tmp_path / "other_format.pt")
    monkeypatch.setenv("DVIS_GOLDEN", str(tmp_path))
    is_format = torch_golden_with("tracker_state_dict", "refiner_state_dict")
    assert golden_files([], "DVIS_GOLDEN", is_format=is_format) == [tmp_path / "mine.pt"]
    (tmp_path / "mine.pt").unlink()
    sentinel, = golden_files([], "DVIS_GOLDEN", is_format=is_format)
    with pytest.raises(AssertionError, match="not a golden file"):
        test_tracker_and_refiner_match_release(sentinel)
