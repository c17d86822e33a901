"""Tracker / refiner / matching: parameter counts, matching conventions, bad inputs."""

from __future__ import annotations

import pytest
import torch

from dvis.errors import ConfigError, InputError
from dvis.modeling.matching import match_queries, match_window
from dvis.modeling.minvis import minvis_match
from dvis.modeling.refiner import RefinerConfig, TemporalRefiner
from dvis.modeling.tracker import ReferringTracker, TrackerConfig


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("classes, tracker_params, refiner_params", [(25, 9_677_082, 14_411_291), (40, 9_680_937, 14_415_146)])
def test_default_parameter_counts_match_the_paper(classes, tracker_params, refiner_params):
    assert count(ReferringTracker(TrackerConfig(num_classes=classes))) == tracker_params
    assert count(TemporalRefiner(RefinerConfig(num_classes=classes))) == refiner_params


def test_paper_matching_recovers_the_permutation_and_release_applies_its_inverse():
    torch.manual_seed(0)
    reference = torch.randn(6, 16)
    cycle = torch.tensor([1, 2, 0, 3, 5, 4])  # a 3-cycle and a swap: not its own inverse
    current = reference[cycle] + 0.01 * torch.randn(6, 16)  # current query i is reference slot cycle[i]
    paper = match_queries(reference, current, "paper")
    assert torch.equal(paper, torch.argsort(cycle))  # current[paper] is back in reference order
    assert torch.allclose(current[paper], reference, atol=0.05)
    release = match_queries(reference, current, "dvis-release")
    assert torch.equal(release, cycle)  # the released code keeps, per current query, its slot
    with pytest.raises(ValueError, match="matching must be one of"):
        match_queries(reference, current, "greedy")


def test_minvis_links_shuffled_queries_into_stable_slots():
    torch.manual_seed(1)
    queries, frames = 8, 5
    base = torch.randn(queries, 32)
    perms = [torch.arange(queries)] + [torch.randperm(queries) for _ in range(frames - 1)]
    embeds = torch.stack([base[p] + 0.01 * torch.randn(queries, 32) for p in perms]).unsqueeze(0)
    logits = torch.stack([torch.nn.functional.one_hot(p, queries).float() for p in perms]).unsqueeze(0)
    out, state = minvis_match(embeds, logits, None, None, "paper")
    # slot i holds the same base query in every frame: its one-hot logit is i in every frame
    assert torch.equal(out.pred_logits.argmax(-1)[0], torch.arange(queries).expand(frames, -1))
    assert state.num_frames == frames


def test_tracker_rejects_bad_shapes():
    tracker = ReferringTracker(TrackerConfig(hidden_dim=32, feedforward_dim=64, num_heads=4, num_layers=1, mask_dim=32))
    with pytest.raises(InputError, match=r"frame_embeds must be \(B, T, Q, 32\)"):
        tracker(torch.randn(3, 10, 32))
    with pytest.raises(InputError, match=r"frame_embeds must be \(B, T, Q, 32\)"):
        tracker(torch.randn(1, 3, 10, 16))
    with pytest.raises(InputError, match="mask_features must be"):
        tracker(torch.randn(1, 3, 10, 32), torch.randn(1, 2, 32, 8, 8))
    _, state = tracker(torch.randn(1, 2, 10, 32))
    with pytest.raises(InputError, match="tracker state is for"):
        tracker(torch.randn(1, 2, 12, 32), state=state)
    with pytest.raises(ConfigError, match="matching must be one of"):
        TrackerConfig(matching="nearest")


def test_refiner_rejects_bad_shapes():
    refiner = TemporalRefiner(RefinerConfig(hidden_dim=32, feedforward_dim=64, num_heads=4, num_layers=1, mask_dim=32))
    with pytest.raises(InputError, match="frame_memory must have the shape"):
        refiner(torch.randn(1, 4, 10, 32), torch.randn(1, 3, 10, 32))
    with pytest.raises(InputError, match="instance_embeds must be"):
        refiner(torch.randn(4, 10, 32), torch.randn(4, 10, 32))


@torch.no_grad()
def test_refiner_mask_windows_and_batch_give_the_same_result():
    torch.manual_seed(2)
    refiner = TemporalRefiner(RefinerConfig(num_classes=3, hidden_dim=32, feedforward_dim=64, num_heads=4, num_layers=2, mask_dim=32)).eval()
    embeds, memory = torch.randn(2, 7, 5, 32), torch.randn(2, 7, 5, 32)
    features = torch.randn(2, 7, 32, 6, 8)
    whole = refiner(embeds, memory, features)
    windowed = refiner(embeds, memory, features, mask_window=3)
    assert torch.allclose(whole.pred_masks, windowed.pred_masks, atol=1e-5)
    single = refiner(embeds[1:], memory[1:], features[1:])
    assert torch.allclose(whole.pred_masks[1:], single.pred_masks, atol=1e-5)
    assert torch.allclose(whole.video_logits[1:], single.video_logits, atol=1e-5)
    # one class per object: identical logits in every frame
    assert torch.equal(whole.pred_logits[:, 0], whole.pred_logits[:, -1])


@torch.no_grad()
def test_refiner_ablation_switches_change_the_output():
    torch.manual_seed(3)
    config = dict(num_classes=3, hidden_dim=32, feedforward_dim=64, num_heads=4, num_layers=1, mask_dim=32)
    full = TemporalRefiner(RefinerConfig(**config)).eval()
    embeds, memory = torch.randn(1, 6, 4, 32), torch.randn(1, 6, 4, 32)
    reference = full(embeds, memory).pred_embds
    for switch in ("use_long_term_attention", "use_short_term_conv", "use_cross_attention"):
        ablated = TemporalRefiner(RefinerConfig(**config, **{switch: False})).eval()
        ablated.load_state_dict(full.state_dict())
        assert not torch.allclose(ablated(embeds, memory).pred_embds, reference, atol=1e-4), switch


def _hand_tracked_second_frame(tracker: ReferringTracker, frames: torch.Tensor, kind: str, initial: str) -> torch.Tensor:
    """frames (1, 2, Q, C): the second frame's last-block output computed from the layers by hand."""
    first, second = frames[0, 0:1], frames[0, 1:2]
    x = first  # first frame: ID = Q = previous block, K = V = S_0
    for i in range(tracker.config.num_layers):
        x = tracker._block(i, x, x, first)
    previous = x
    order = match_queries(first[0], second[0], tracker.config.matching)
    matched = second[:, order]
    if kind == "standard":
        x = previous
        for i in range(tracker.config.num_layers):
            x = tracker._block(i, x, x, second)
        return x
    x = {"matched": matched, "unmatched": second, "previous": previous, "zero": torch.zeros_like(second)}[initial]
    for i in range(tracker.config.num_layers):
        x = tracker._block(i, x, previous, second)
    return x


@pytest.mark.parametrize("kind, initial", [("referring", "matched"), ("referring", "unmatched"),
                                           ("referring", "previous"), ("referring", "zero"), ("standard", "matched")])
@torch.no_grad()
def test_tracker_ablations_follow_their_definition(kind, initial):
    torch.manual_seed(4)
    sizes = dict(num_classes=3, hidden_dim=32, feedforward_dim=64, num_heads=4, num_layers=2, mask_dim=32)
    base = ReferringTracker(TrackerConfig(**sizes)).eval()
    tracker = ReferringTracker(TrackerConfig(**sizes, cross_attention=kind, initial_value=initial)).eval()
    tracker.load_state_dict(base.state_dict())  # same parameters: the switches add none
    frames = torch.randn(1, 2, 6, 32)
    frames[0, 1] = frames[0, 0][torch.tensor([2, 0, 1, 5, 3, 4])] + 0.05 * torch.randn(6, 32)
    out, _ = tracker(frames)
    expected = tracker.decoder_norm(_hand_tracked_second_frame(tracker, frames, kind, initial))
    assert torch.allclose(out.pred_embds[0, 1], expected[0], atol=1e-5)
    if (kind, initial) != ("referring", "matched"):
        assert not torch.allclose(out.pred_embds[0, 1], base(frames)[0].pred_embds[0, 1], atol=1e-3)


@torch.no_grad()
def test_standard_cross_attention_ignores_the_current_query_order():
    """Without the identification, slot i cannot follow the object: shuffling S_t changes nothing."""
    torch.manual_seed(5)
    sizes = dict(num_classes=3, hidden_dim=32, feedforward_dim=64, num_heads=4, num_layers=2, mask_dim=32)
    standard = ReferringTracker(TrackerConfig(**sizes, cross_attention="standard")).eval()
    frames = torch.randn(1, 2, 6, 32)
    shuffled = frames.clone()
    shuffled[0, 1] = frames[0, 1][torch.randperm(6)]
    assert torch.allclose(standard(frames)[0].pred_embds, standard(shuffled)[0].pred_embds, atol=1e-5)
    # with an identification from S_t's own order, slot i takes whichever query is i-th
    unmatched = ReferringTracker(TrackerConfig(**sizes, initial_value="unmatched")).eval()
    unmatched.load_state_dict(standard.state_dict())
    assert not torch.allclose(unmatched(frames)[0].pred_embds, unmatched(shuffled)[0].pred_embds, atol=1e-3)


def test_tracker_ablation_options_are_checked():
    with pytest.raises(ConfigError, match="cross_attention must be one of"):
        TrackerConfig(cross_attention="deformable")
    with pytest.raises(ConfigError, match="initial_value must be one of"):
        TrackerConfig(initial_value="random")
    with pytest.raises(ConfigError, match="referring cross-attention only"):
        TrackerConfig(cross_attention="standard", initial_value="zero")
    with pytest.raises(ConfigError, match="match_noise is a probability"):
        TrackerConfig(match_noise=1.5)


def test_match_noise_permutes_training_matches_only():
    """DVIS++'s hard denoising: in training a noised frame's order is a random permutation that the
    next frame is matched against; in eval mode (and at 0) the tracker is DVIS's, bit for bit."""
    sizes = dict(num_classes=3, hidden_dim=32, feedforward_dim=64, num_heads=4, num_layers=2, mask_dim=32)
    torch.manual_seed(6)
    plain = ReferringTracker(TrackerConfig(**sizes))
    noisy = ReferringTracker(TrackerConfig(**sizes, match_noise=1.0))
    noisy.load_state_dict(plain.state_dict())
    frames = torch.randn(3, 4, 6, 32)
    frames[:, 1:] = frames[:, :1] + 0.01 * torch.randn(3, 3, 6, 32)  # the same objects, in the same order
    with torch.no_grad():
        clean = plain.eval()(frames)[0]
        assert torch.equal(clean.match_indices[:, 1:], torch.arange(6).expand(3, 3, 6))
        assert torch.equal(noisy.eval()(frames)[0].pred_embds, clean.pred_embds)
        assert torch.equal(plain.train()(frames)[0].pred_embds, clean.pred_embds)  # match_noise=0
        torch.manual_seed(7)
        noised = noisy.train()(frames)[0]
    orders = noised.match_indices[:, 1:]  # (B, T-1, Q): every one a permutation, not all identity
    assert torch.equal(orders.sort(-1).values, torch.arange(6).expand(3, 3, 6))
    assert not torch.equal(orders, torch.arange(6).expand(3, 3, 6))
    torch.manual_seed(7)
    with torch.no_grad():
        again = noisy(frames)[0]
    assert torch.equal(again.match_indices, noised.match_indices)  # seeded: repeatable
    # a permuted frame's queries become the reference: the next frame follows that permutation
    half = ReferringTracker(TrackerConfig(**sizes, match_noise=0.5)).train()
    torch.manual_seed(0)
    with torch.no_grad():
        orders = half(frames.repeat(8, 1, 1, 1))[0].match_indices  # (24, 4, 6)
    # un-noised frames match back onto the previous frame's permutation (the frames barely move);
    # noised ones draw a fresh one: about half of 48 frame pairs at 0.5 (binomial, sd 3.5)
    kept = sum(torch.equal(video[t], video[t - 1]) for video in orders for t in range(2, 4))
    assert 12 <= kept <= 36


@pytest.mark.parametrize("matching", ["paper", "dvis-release"])
@pytest.mark.parametrize("with_reference", [False, True])
def test_window_matching_equals_frame_by_frame_matching(matching, with_reference):
    """match_window (one host transfer per window) = match_queries chained frame after frame."""
    torch.manual_seed(8)
    frames = torch.randn(2, 7, 9, 16)
    for t in range(1, 7):  # the same objects, shuffled and moved a little on every frame
        frames[:, t] = frames[:, t - 1][:, torch.randperm(9)] + 0.3 * torch.randn(2, 9, 16)
    frames[1, 3, 4] = 0.0  # a zero query: NaN-free cost through the 1e-6 in the norms
    reference = torch.randn(2, 9, 16) if with_reference else None
    replaced = {(0, 4): torch.randperm(9)}
    orders = match_window(reference, frames, matching, replaced)
    for b in range(2):
        previous = reference[b] if with_reference else frames[b, 0]
        for t in range(0 if with_reference else 1, 7):
            expected = replaced.get((b, t), match_queries(previous, frames[b, t], matching))
            assert torch.equal(orders[b, t], expected), (b, t)
            previous = frames[b, t][expected]
    if not with_reference:
        assert torch.equal(orders[:, 0], torch.arange(9).expand(2, 9))
