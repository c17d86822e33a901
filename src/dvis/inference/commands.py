"""CLI: ``dvis segment INPUT... --model NAME_OR_DIR --out DIR``."""

from __future__ import annotations

import argparse

from dvis.modeling.dvis import MODES, TASKS
from dvis.modeling.fast_path import PRECISIONS


def run_segment(args: argparse.Namespace) -> int:
    from dvis.inference.segment import SegmentOptions, SegmentRun

    options = SegmentOptions(
        inputs=args.inputs, out=args.out, model=args.model, weights=args.weights, mode=args.mode,
        task=args.task, clip_len=args.clip_len, device=args.device, render=not args.no_render,
        frames_root=args.frames_root, spill_dir=args.spill_dir, spill_dtype=args.spill_dtype,
        render_threshold=args.render_threshold, merge_timeout=args.merge_timeout, quiet=args.quiet,
        precision=args.precision)
    return SegmentRun(options).run()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment", help="segment and track objects in videos",
        description="Segment and track videos: video files, frame folders, folders of those, or a "
                    "YouTube-VIS annotation JSON. Writes OUT/results.json (VIS), OUT/pred.json + "
                    "OUT/pan_pred/ (VPS) or OUT/vss/ (VSS), and OUT/<video>.mp4 overlays. Resumes "
                    "interrupted runs; shards over torchrun ranks (RANK / WORLD_SIZE).")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--model", required=True, help="registered name (e.g. synthetic-demo), model folder, "
                   "or release preset name (with --weights)")
    p.add_argument("--weights", help="released DVIS checkpoint (.pth) for a preset --model")
    p.add_argument("--mode", choices=MODES, help="default: the model's")
    p.add_argument("--clip-len", type=int, help="semi-online clip length in frames")
    p.add_argument("--task", choices=TASKS, help="default: the model's")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--no-render", action="store_true", help="do not write overlay videos")
    p.add_argument("--frames-root", help="frames folder for a YouTube-VIS JSON (default: JPEGImages/ beside it)")
    p.add_argument("--spill-dir", help="where per-frame arrays are spilled (default: the system temp folder)")
    p.add_argument("--spill-dtype", choices=("float32", "float16"), default="float32",
                   help="float16 halves the spill's disk use (results may differ on boundary pixels)")
    p.add_argument("--render-threshold", type=float, default=0.3, help="draw tracks with score >= this")
    p.add_argument("--merge-timeout", type=float, help="rank 0: seconds to wait for other ranks (default: forever)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="segmenter arithmetic: fp32 (exact, default) or bf16 (fast path: bfloat16 autocast, "
                        "~2x faster on CPUs with AVX512-BF16; see docs/model.md for its deviation)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_segment)
