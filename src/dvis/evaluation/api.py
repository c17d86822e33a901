"""The benchmarks' metrics on files, one function each (what ``dvis eval*`` run).

    evaluate_ytvis("valid.json", "results.json")                       # YouTube-VIS / OVIS AP, AR
    evaluate_vpq("panoptic_gt_VIPSeg_val.json", "panomasksRGB", "out")  # VIPSeg VPQ
    evaluate_stq("panoptic_gt_VIPSeg_val.json", "panomasksRGB", "out")  # STQ, AQ, SQ
    evaluate_vss("VSPW", "out/vss")                                     # mIoU, mVC8, mVC16

AP / AR and STQ are fractions (as pycocotools and the public STQ code report them), VPQ is x100
(as the VIPSeg script reports it). File layouts: docs/evaluation.md.
"""

from __future__ import annotations

from pathlib import Path

from dvis.evaluation import stq, vpq, vss, ytvis
from dvis.evaluation.vipseg_io import open_set

PathLike = str | Path


def evaluate_ytvis(gt_json: PathLike, pred_json: PathLike, strict_lengths: bool = False) -> dict:
    """YouTube-VIS / OVIS: AP, AP50, AP75, AR1, AR10, the size and occlusion splits, per-category AP.
    ``strict_lengths``: refuse result entries whose frame count is not their video's."""
    return ytvis.evaluate_files(gt_json, pred_json, strict_lengths=strict_lengths)


def evaluate_vpq(gt_json: PathLike, gt_dir: PathLike, pred_dir: PathLike, pred_json: PathLike | None = None) -> dict:
    """VIPSeg VPQ (``VPQ``, ``VPQ_thing``, ``VPQ_stuff`` over the script's windows, ``k_0_5_10_15`` over
    the paper's). ``pred_json`` defaults to ``pred_dir/pred.json``, PNGs under ``pred_dir/pan_pred``."""
    return vpq.evaluate_set(open_set(gt_json, gt_dir, pred_dir, pred_json))


def evaluate_stq(gt_json: PathLike, gt_dir: PathLike, pred_dir: PathLike, pred_json: PathLike | None = None,
                 num_classes: int = 124) -> dict:
    """Segmentation and Tracking Quality (``STQ``, ``AQ``, ``SQ``) of a VIPSeg-layout prediction."""
    return stq.evaluate_set(open_set(gt_json, gt_dir, pred_dir, pred_json), num_classes=num_classes)


def evaluate_vss(gt_dir: PathLike, pred_dir: PathLike, split: str = "val.txt", num_classes: int = 124) -> dict:
    """VSPW video semantic segmentation: ``mIoU``, ``mVC8``, ``mVC16``."""
    return vss.evaluate_folders(gt_dir, pred_dir, split, num_classes)
