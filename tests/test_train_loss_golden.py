"""Training losses against the released criterion (``goldens/losses``, DVIS_LOSS_GOLDEN).

Each golden holds one tracker or refiner loss case of the release, run ``seeds`` times with
``torch.manual_seed(k)``: the mean and standard deviation of every weighted term, and the final
block's matched pairs. We run our loss the same number of times; every term's mean must agree
within ``4 * sqrt(std_release**2 + std_ours**2) / sqrt(seeds) + 1e-4`` (class terms within 1e-4,
the point sampling being the only randomness) and our matching must give the same pairs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dvis.training.config import LossConfig
from dvis.training.losses import ClipTargets, DVISLoss
from dvis.training.matchers import MatchCosts, match_first_appearance, match_tubes
from golden_files import DATA, golden_files, ids, require_file, torch_golden_with
from test_train_common import one_thread  # noqa: F401 (fixture)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "goldens" / "losses"
IS_FORMAT = torch_golden_with("stage", "guided", "seeds", "config", "inputs", "matched_pairs", "loss_names",
                              "loss_mean", "loss_std")


def _bundled_and_shared() -> list[Path]:
    bundled = sorted((DATA / "losses").glob("*.pt"))
    shared = sorted(SHARED.glob("*.pt")) if SHARED.is_dir() else []
    copies = {p.name: p.read_bytes() for p in bundled}
    return bundled + [p for p in shared if copies.get(p.name) != p.read_bytes() and IS_FORMAT(p)]


FILES = golden_files(_bundled_and_shared(), "DVIS_LOSS_GOLDEN", is_format=IS_FORMAT)
OUR_NAMES = {"loss_ce": "loss_cross_entropy"}


def _targets(inputs: dict) -> ClipTargets:
    """Released (N,) labels, (N, T) ids and (N, T, H, W) masks -> our clip targets (T, N, ...)."""
    return ClipTargets(classes=inputs["target_labels"], masks=inputs["target_masks"].transpose(0, 1).float(),
                       present=(inputs["target_ids"] >= 0).T)


def _masks(released: torch.Tensor) -> torch.Tensor:
    """Released (B, Q, T, h, w) -> ours (B, T, Q, h, w)."""
    return released.transpose(1, 2)


def case(golden: dict):
    """-> (loss, blocks, targets, matcher, guide) for ``DVISLoss.video_losses``."""
    config, inputs = golden["config"], golden["inputs"]
    loss_config = LossConfig(class_weight=config["class_weight"], mask_weight=config["mask_weight"],
                             dice_weight=config["dice_weight"], no_object_weight=config["no_object_weight"],
                             num_points=config["num_points"], oversample_ratio=config["oversample_ratio"],
                             importance_sample_ratio=config["importance_sample_ratio"])
    loss = DVISLoss(config["num_classes"], loss_config)
    costs = MatchCosts(config["class_weight"], config["mask_weight"], config["dice_weight"], config["num_points"])
    target = _targets(inputs)
    blocks = [(logits, _masks(masks)) for logits, masks in zip(inputs["pred_logits"], inputs["pred_masks"])]
    video = golden["stage"] == "refiner"
    guide = None
    if golden["guided"]:
        guide_logits = inputs["guide_logits"].mean(1) if video else inputs["guide_logits"]  # release: frame mean
        guide = (guide_logits, _masks(inputs["guide_masks"]))

    def matcher(logits, masks):
        if video:
            return [match_tubes(logits[0], masks[0], target.classes, target.masks, costs)]
        return [match_first_appearance(logits[0], masks[0], target.classes, target.masks, target.present, costs)]

    return loss, blocks, [target], matcher, guide, video


def run_ours(golden: dict) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]]:
    """Every weighted term over ``seeds`` runs (name -> (seeds,) tensor) and the final block's pairs."""
    loss, blocks, targets, matcher, guide, video = case(golden)
    runs: dict[str, list[float]] = {}
    for seed in range(golden["seeds"]):
        torch.manual_seed(seed)
        with torch.no_grad():
            terms = loss.video_losses(blocks, targets, matcher, guide, video_class=video)
        for name, value in terms.items():
            weight = loss.weighted_total({name: torch.tensor(1.0)}).item()
            runs.setdefault(name, []).append(weight * value.item())
    torch.manual_seed(0)
    final = matcher(*(guide if guide is not None else blocks[-1]))[0]
    pairs = sorted(zip(final[0].tolist(), final[1].tolist()))
    return {name: torch.tensor(values, dtype=torch.float64) for name, values in runs.items()}, pairs


def mismatches(golden: dict) -> list[str]:
    ours, pairs = run_ours(golden)
    problems = []
    expected_pairs = sorted(tuple(p) for p in golden["matched_pairs"])
    if pairs != expected_pairs:
        problems.append(f"matched pairs {pairs} != release {expected_pairs}")
    seeds = golden["seeds"]
    for name, mean, std in zip(golden["loss_names"], golden["loss_mean"], golden["loss_std"]):
        ours_name = name.replace("loss_ce", OUR_NAMES["loss_ce"])
        if ours_name not in ours:
            problems.append(f"{name}: not computed (ours has {sorted(ours)})")
            continue
        values = ours[ours_name]
        tol = 1e-4 if name.startswith("loss_ce") else \
            4 * math.sqrt(float(std) ** 2 + values.std().item() ** 2) / math.sqrt(seeds) + 1e-4
        if abs(values.mean().item() - float(mean)) > tol:
            problems.append(f"{name}: ours {values.mean().item():.4f} release {float(mean):.4f} (tolerance {tol:.4f})")
    return problems


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_training_loss_matches_release(path, one_thread):
    require_file(path)
    golden = torch.load(path, weights_only=True)
    problems = mismatches(golden)
    assert not problems, f"{path} ({golden['stage']}, guided={golden['guided']}):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("stage", ["tracker", "refiner"])
def test_guided_and_unguided_cases_run_and_match_on_the_guide(stage, guided, one_thread):
    """Both stages in both matching modes: the terms are finite, and a guided run's final pairs
    are those of the guide (the release matches once on the guide for every block)."""
    golden = torch.load(DATA / "losses" / f"{stage}_a.pt", weights_only=True)
    golden = dict(golden, guided=guided, seeds=2)
    ours, pairs = run_ours(golden)
    assert set(ours) == {f"{t}{s}" for t in ("loss_cross_entropy", "loss_mask", "loss_dice")
                         for s in ("", "_0", "_1", "_2", "_3", "_4")}
    assert all(torch.isfinite(v).all() for v in ours.values())
    if guided:  # the guide is an other prediction: its pairs are this run's final pairs
        loss, blocks, targets, matcher, guide, video = case(golden)
        torch.manual_seed(0)
        q, o = matcher(*guide)[0]
        assert pairs == sorted(zip(q.tolist(), o.tolist()))


def test_a_loss_golden_that_does_not_match_fails(one_thread):
    golden = torch.load(DATA / "losses" / "refiner_a.pt", weights_only=True)
    wrong = dict(golden, seeds=8, loss_mean=golden["loss_mean"] * 1.5)
    assert any("loss_mask" in p for p in mismatches(wrong))
    wrong_pairs = dict(golden, seeds=2, matched_pairs=[(1, 0), (3, 1), (5, 2)])
    assert any("matched pairs" in p for p in mismatches(wrong_pairs))
