"""CLI: ``dvis eval``, ``dvis eval-vpq``, ``dvis eval-stq``, ``dvis eval-vss``.

Every metric is printed in percent with one decimal, as the papers report them; a ``--json`` file
keeps each evaluator's own scale (AP/AR, STQ and VSS as fractions like pycocotools and the public
scripts; VPQ x 100 like the VIPSeg script).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from dvis.errors import InputError
from dvis.fileio import atomic_write_json

YTVIS_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
              "AP_light", "AP_medium", "AP_heavy")


def _jsonable(value: Any) -> Any:
    """Floats stay floats, NaN becomes null, dict keys become strings, numpy scalars plain."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not hasattr(value, "__len__"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def percent(value: Any, scale: float = 100.0) -> str:
    """A metric as printed: ``value * scale`` with one decimal; ``n/a`` for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * scale:.1f}"


def _print_table(rows: list[tuple[str, Any]], scale: float = 100.0) -> None:
    """One ``name  value`` line per row, values in percent (``scale`` 1 for values already x100)."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {percent(value, scale)}")


def _write(path: str | None, obj: dict) -> None:
    if path:
        atomic_write_json(path, _jsonable(obj))
        print(f"wrote {path}")


# ----------------------------------------------------------------------------- commands


def run_eval(args: argparse.Namespace) -> int:
    from dvis.evaluation.api import evaluate_ytvis

    missing = [flag for flag, value in (("--gt-json", args.gt_json), ("--pred-json", args.pred_json)) if not value]
    if missing:
        raise InputError(f"dvis eval needs {' and '.join(missing)} "
                         "(dvis eval --gt-json ANN.json --pred-json RESULTS.json)")
    result = evaluate_ytvis(args.gt_json, args.pred_json, strict_lengths=args.strict_lengths)
    # -1 (summarize()'s "undefined") is reported as null, as DVIS's evaluator logs it.
    summary = {key: None if result[key] == -1.0 else result[key] for key in YTVIS_KEYS}
    summary["per_category"] = result["per_category"]
    _print_table([(key, summary[key]) for key in YTVIS_KEYS])
    print("per-category AP (category id):")
    _print_table([(f"  {cat}", ap) for cat, ap in result["per_category"].items()])
    _write(args.json, summary)
    return 0


def run_eval_vpq(args: argparse.Namespace) -> int:
    from dvis.evaluation.api import evaluate_vpq

    result = evaluate_vpq(args.gt_json, args.gt_dir, args.pred_dir, args.pred_json)
    paper = result["k_0_5_10_15"]
    rows = [("VPQ (script, n=1,2,4,6,8)", result["VPQ"]), ("VPQ_thing", result["VPQ_thing"]),
            ("VPQ_stuff", result["VPQ_stuff"]), ("VPQ (paper, k=0,5,10,15)", paper["VPQ"]),
            ("VPQ_thing (paper k)", paper["VPQ_thing"]), ("VPQ_stuff (paper k)", paper["VPQ_stuff"])]
    rows += [(f"VPQ n={n} (k={(n - 1) * 5})", 100 * w["All"]["pq"]) for n, w in result["windows"].items()]
    _print_table(rows, scale=1.0)  # the VIPSeg script's numbers are already x100
    _write(args.json, result)
    return 0


def run_eval_stq(args: argparse.Namespace) -> int:
    from dvis.evaluation.api import evaluate_stq

    result = evaluate_stq(args.gt_json, args.gt_dir, args.pred_dir, args.pred_json, num_classes=args.num_classes)
    _print_table([("STQ", result["STQ"]), ("AQ", result["AQ"]), ("SQ (mIoU)", result["SQ"])])
    _write(args.json, result)
    return 0


def run_eval_vss(args: argparse.Namespace) -> int:
    from dvis.evaluation.api import evaluate_vss

    result = evaluate_vss(args.gt_dir, args.pred_dir, args.split, args.num_classes)
    _print_table([("mIoU", result["mIoU"]), ("mVC8", result["mVC8"]), ("mVC16 (script)", result["mVC16"]),
                  ("mVC16 (own windows)", result["mVC16_own_windows"])])
    _write(args.json, result)
    return 0


def _panoptic_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt-json", required=True, help="VIPSeg panoptic ground-truth JSON")
    parser.add_argument("--gt-dir", required=True, help="folder of ground-truth PNGs: GT_DIR/<video>/<frame>.png")
    parser.add_argument("--pred-dir", required=True, help="folder with pred.json and pan_pred/<video>/<frame>.png")
    parser.add_argument("--pred-json", default=None, help="predictions JSON (default: PRED_DIR/pred.json)")
    parser.add_argument("--json", default=None, help="write the numbers to this JSON file")


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="YouTube-VIS/OVIS AP/AR (+ occlusion split) of a results.json",
                              description="YouTube-VIS/OVIS AP and AR, printed in percent.")
    # not required=True: the hidden aliases below fill the same fields (checked in run_eval)
    p.add_argument("--gt-json", help="YouTube-VIS/OVIS annotation JSON (required)")
    p.add_argument("--pred-json",
                   help="results.json (list of {video_id, category_id, score, segmentations}; required)")
    # the spellings before issue 17, kept working but not shown
    p.add_argument("--gt", dest="gt_json", help=argparse.SUPPRESS)
    p.add_argument("--pred", dest="pred_json", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="write the numbers to this JSON file")
    p.add_argument("--strict-lengths", action="store_true",
                   help="refuse results or annotations whose frame count is not their video's (default: "
                        "pair frames up to the shorter list, with a warning, as the public YTVOSeval does)")
    p.set_defaults(func=run_eval)

    p = subparsers.add_parser("eval-vpq", help="VIPSeg VPQ (script windows and paper windows)")
    _panoptic_args(p)
    p.set_defaults(func=run_eval_vpq)

    p = subparsers.add_parser("eval-stq", help="VIPSeg STQ, AQ, SQ")
    _panoptic_args(p)
    p.add_argument("--num-classes", type=int, default=124, help="number of classes (VIPSeg: 124)")
    p.set_defaults(func=run_eval_stq)

    p = subparsers.add_parser("eval-vss", help="VSPW-style mIoU, mVC8, mVC16")
    p.add_argument("--gt-dir", required=True, help="VSPW root: <split file> and data/<video>/mask/*.png")
    p.add_argument("--pred-dir", required=True, help="predictions: <video>/<frame>.png class maps")
    p.add_argument("--split", default="val.txt", help="split file under --gt-dir (default val.txt)")
    p.add_argument("--num-classes", type=int, default=124, help="number of classes (default 124)")
    p.add_argument("--json", default=None, help="write the numbers to this JSON file")
    p.set_defaults(func=run_eval_vss)
