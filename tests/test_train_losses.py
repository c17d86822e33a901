"""Matchers (first appearance, tubes), the set loss and guided matching, on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from test_train_common import one_thread  # noqa: F401 (fixture)

from dvis.training.config import LossConfig
from dvis.training.losses import ClipTargets, DVISLoss
from dvis.training.matchers import MatchCosts, match_first_appearance, match_tubes
from dvis.training.stages import take_queries

BIG = 12.0  # a confident logit
COSTS = MatchCosts(num_points=256)


def square(t_h: int, w: int, top: int, left: int, size: int) -> torch.Tensor:
    mask = torch.zeros(t_h, w)
    mask[top : top + size, left : left + size] = 1
    return mask


def logits_for(mask: torch.Tensor) -> torch.Tensor:
    """Mask logits that reproduce ``mask`` confidently."""
    return (mask * 2 - 1) * BIG


def test_first_appearance_matches_on_the_first_visible_frame_and_skips_used_queries():
    torch.manual_seed(0)
    frames, queries, size = 3, 4, 16
    obj_a = square(size, size, 0, 0, 8)
    obj_b = square(size, size, 8, 8, 8)
    target_masks = torch.zeros(frames, 2, size, size)
    target_masks[:, 0] = obj_a  # A visible from frame 0
    target_masks[2, 1] = obj_b  # B appears at frame 2 only
    present = target_masks.flatten(2).any(-1)
    pred = torch.full((frames, queries, size, size), -BIG)
    pred[0, 2] = logits_for(obj_a)  # frame 0: query 2 is A
    pred[1, 0] = logits_for(obj_a)  # frame 1 would prefer query 0 for A: must be ignored
    pred[2, 2] = logits_for(obj_b)  # frame 2: the best query for B is 2, already A's
    pred[2, 3] = logits_for(obj_b) * 0.5  # second best for B
    logits = torch.zeros(frames, queries, 3)
    queries_idx, objects = match_first_appearance(logits, pred, torch.tensor([0, 1]), target_masks, present, COSTS)
    assert dict(zip(objects.tolist(), queries_idx.tolist())) == {0: 2, 1: 3}


def test_first_appearance_leaves_never_visible_objects_unmatched():
    masks = torch.zeros(2, 2, 8, 8)
    masks[:, 0, :4, :4] = 1
    present = masks.flatten(2).any(-1)
    q, o = match_first_appearance(torch.zeros(2, 3, 2), torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]), masks,
                                  present, COSTS)
    assert o.tolist() == [0] and len(q) == 1


def test_tube_matching_prefers_the_query_that_fits_every_frame():
    torch.manual_seed(0)
    frames, size = 4, 16
    target = torch.stack([square(size, size, 2 * t, 2 * t, 6) for t in range(frames)])  # (T, H, W)
    pred = torch.full((frames, 2, size, size), -BIG)
    pred[0, 0] = logits_for(target[0])  # query 0 right on frame 0 only
    pred[:, 1] = logits_for(target)  # query 1 right on every frame
    q, o = match_tubes(torch.zeros(2, 3), pred, torch.tensor([1]), target[:, None], COSTS)
    assert q.tolist() == [1] and o.tolist() == [0]


def test_class_cost_decides_between_equal_masks():
    mask = square(8, 8, 0, 0, 4)
    pred = logits_for(mask).expand(1, 2, 8, 8).clone()
    logits = torch.tensor([[BIG, 0.0, 0.0], [0.0, BIG, 0.0]])  # query 1 says class 1
    q, _ = match_tubes(logits, pred, torch.tensor([1]), mask[None, None], COSTS)
    assert q.tolist() == [1]


def clip(classes, masks) -> ClipTargets:
    masks = torch.as_tensor(masks, dtype=torch.float32)
    return ClipTargets(torch.as_tensor(classes), masks, masks.flatten(2).any(-1))


def test_losses_are_small_for_perfect_predictions_and_weighted_2_5_5():
    torch.manual_seed(0)
    loss = DVISLoss(2, LossConfig(num_points=256, importance_sample_ratio=0.0))
    size = 32
    obj = square(size, size, 8, 8, 16)
    target = clip([1], obj.expand(2, 1, size, size))
    masks = torch.full((1, 2, 3, size, size), -BIG)
    masks[0, :, 0] = logits_for(obj)
    logits = torch.full((1, 2, 3, 3), -BIG)
    logits[..., 2] = BIG  # no-object everywhere ...
    logits[0, :, 0] = torch.tensor([-BIG, BIG, -BIG])  # ... except query 0 = class 1
    match = [(torch.tensor([0]), torch.tensor([0]))]
    good = loss.frame_major_terms(logits, masks, [target], match, video_class=False)
    # only points within a pixel of the square's or the image's edge (zero padding) see interpolated logits
    assert good["loss_cross_entropy"] < 1e-3 and good["loss_mask"] < 0.15 and good["loss_dice"] < 0.05, good
    wrong = loss.frame_major_terms(logits, masks, [target], [(torch.tensor([1]), torch.tensor([0]))], False)
    assert wrong["loss_mask"] > 1 and wrong["loss_dice"] > 0.9 and wrong["loss_cross_entropy"] > 1
    total = loss.weighted_total({"loss_cross_entropy": torch.tensor(1.0), "loss_mask": torch.tensor(1.0),
                                 "loss_dice": torch.tensor(1.0), "loss_dice_0": torch.tensor(1.0)})
    assert total.item() == 2 + 5 + 5 + 5


def test_no_object_weight_is_0_1_in_the_class_term():
    loss = DVISLoss(2, LossConfig(num_points=16))
    logits = torch.randn(1, 3, 3)
    target = clip([0], torch.ones(1, 1, 4, 4))
    terms = loss.frame_major_terms(logits, torch.zeros(1, 1, 3, 4, 4), [target],
                                   [(torch.tensor([2]), torch.tensor([0]))], video_class=True)
    expected = F.cross_entropy(logits[0], torch.tensor([2, 2, 0]), weight=torch.tensor([1.0, 1.0, 0.1]))
    assert math.isclose(terms["loss_cross_entropy"].item(), expected.item(), rel_tol=1e-6)


def test_refiner_mask_terms_are_one_mean_per_tube_tracker_terms_per_frame():
    """Refiner: one BCE mean per object over its (T*h, w) tube, normalised by the number of objects
    (not summed over frames); tracker: per (frame, object) pair."""
    torch.manual_seed(0)
    loss = DVISLoss(1, LossConfig(num_points=64, importance_sample_ratio=0.0))
    frames = 3
    target = clip([0], torch.ones(frames, 1, 4, 4))
    masks = torch.zeros(1, frames, 1, 4, 4)  # logit 0 everywhere: BCE = log 2 at every point
    match = [(torch.tensor([0]), torch.tensor([0]))]
    video = loss.frame_major_terms(torch.zeros(1, 1, 2), masks, [target], match, video_class=True)
    frame = loss.frame_major_terms(torch.zeros(1, frames, 1, 2), masks, [target], match, video_class=False)
    assert math.isclose(video["loss_mask"].item(), math.log(2), rel_tol=1e-5)
    assert math.isclose(frame["loss_mask"].item(), math.log(2), rel_tol=1e-5)
    # the tube: a query right on frame 0 only and wrong on the others has a loss between the two
    half = torch.full((1, frames, 1, 4, 4), -BIG)
    half[0, 0] = BIG
    tube = loss.frame_major_terms(torch.zeros(1, 1, 2), half, [target], match, video_class=True)
    assert 0.3 * BIG < tube["loss_mask"].item() < 0.9 * BIG  # about 2/3 of the points wrong by BIG


def test_deep_supervision_and_guided_matching():
    loss = DVISLoss(1, LossConfig(num_points=16))
    target = clip([0], torch.ones(2, 1, 4, 4))
    blocks = [(torch.zeros(1, 2, 3, 2), torch.zeros(1, 2, 3, 4, 4)) for _ in range(3)]
    calls = []

    def matcher(logits, masks):
        calls.append(logits)
        return [(torch.tensor([0]), torch.tensor([0]))]

    own = loss.video_losses(blocks, [target], matcher, None, video_class=False)
    assert len(calls) == 3  # every block matched on its own predictions
    assert set(own) == {f"{t}{s}" for t in ("loss_cross_entropy", "loss_mask", "loss_dice") for s in ("", "_0", "_1")}
    calls.clear()
    guide = (torch.ones(1, 2, 3, 2), torch.zeros(1, 2, 3, 4, 4))
    loss.video_losses(blocks, [target], matcher, guide, video_class=False)
    assert len(calls) == 1 and torch.equal(calls[0], guide[0])  # one match, on the guide, for all blocks
    shallow = DVISLoss(1, LossConfig(num_points=16, deep_supervision=False))
    assert set(shallow.video_losses(blocks, [target], matcher, None, False)) == {
        "loss_cross_entropy", "loss_mask", "loss_dice"}


def test_take_queries_reorders_each_frame():
    values = torch.arange(2 * 2 * 3 * 2).view(2, 2, 3, 2).float()
    order = torch.tensor([[[2, 0, 1], [1, 2, 0]], [[0, 1, 2], [2, 1, 0]]])
    out = take_queries(values, order)
    for b in range(2):
        for t in range(2):
            assert torch.equal(out[b, t], values[b, t, order[b, t]])
    masks = torch.randn(2, 2, 3, 4, 5)
    assert torch.equal(take_queries(masks, order)[1, 1], masks[1, 1, order[1, 1]])


def test_empty_clip_gives_zero_mask_loss_and_a_gradient_path():
    loss = DVISLoss(1, LossConfig(num_points=16))
    masks = torch.zeros(1, 2, 3, 4, 4, requires_grad=True)
    logits = torch.zeros(1, 2, 3, 2, requires_grad=True)
    empty = ClipTargets(torch.zeros(0, dtype=torch.int64), torch.zeros(2, 0, 4, 4), torch.zeros(2, 0, dtype=torch.bool))
    terms = loss.frame_major_terms(logits, masks, [empty], [(torch.zeros(0, dtype=torch.int64),) * 2], False)
    assert terms["loss_mask"].item() == 0 and terms["loss_cross_entropy"].item() > 0
    loss.weighted_total(terms).backward()
    assert masks.grad is not None


@pytest.mark.parametrize("points", [1, 100])
def test_point_count_is_configurable(points):
    loss = DVISLoss(1, LossConfig(num_points=points))
    assert loss.num_points == points and loss.costs.num_points == points


def test_point_sampling_is_repeatable_under_torch_manual_seed():
    loss = DVISLoss(2, LossConfig(num_points=64))
    masks = torch.randn(1, 3, 4, 16, 16)
    target = clip([0, 1], (torch.rand(3, 2, 32, 32) > 0.5).float())
    match = [(torch.tensor([0, 2]), torch.tensor([0, 1]))]
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(loss.frame_major_terms(torch.randn(1, 4, 3), masks, [target], match, video_class=True))
    assert runs[0]["loss_mask"].item() == runs[1]["loss_mask"].item()
    assert runs[0]["loss_mask"].item() != runs[2]["loss_mask"].item()


def test_sample_labels_equals_sampling_a_copy_of_each_rows_mask():
    from transformers.models.mask2former.modeling_mask2former import sample_point

    from dvis.training.losses import sample_labels

    torch.manual_seed(0)
    bank = (torch.rand(5, 12, 9) > 0.5).float()
    ids = torch.tensor([3, 0, 3, 3, 1, 0])  # mask 2 and 4 unused, mask 3 three times
    coords = torch.rand(len(ids), 7, 2)
    direct = sample_point(bank[ids][:, None], coords, align_corners=False).flatten(1)
    assert torch.allclose(sample_labels(bank, ids, coords), direct, atol=1e-6)
