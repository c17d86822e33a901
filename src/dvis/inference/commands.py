"""CLI: ``dvis segment INPUT... --model NAME_OR_DIR --out DIR`` and ``dvis models``."""

from __future__ import annotations

import argparse

from dvis.errors import InputError
from dvis.modeling.dvis import MODES, TASKS
from dvis.modeling.fast_path import PRECISIONS


def run_segment(args: argparse.Namespace) -> int:
    from dvis.inference.segment import SegmentOptions, SegmentRun

    if args.mode == "semi-online" and args.clip_len is None:
        raise InputError("--mode semi-online needs --clip-len N: the refiner runs on clips of N frames (the "
                         "paper's Table II: 1 is about the tracker alone, 80 or more about offline)")

    options = SegmentOptions(
        inputs=args.inputs, out=args.out, model=args.model, weights=args.weights, mode=args.mode,
        task=args.task, clip_len=args.clip_len, device=args.device, render=not args.no_render,
        frames_root=args.frames_root, spill_dir=args.spill_dir, spill_dtype=args.spill_dtype,
        render_threshold=args.render_threshold, merge_timeout=args.merge_timeout, quiet=args.no_progress,
        max_num=args.max_num, score_threshold=args.score_threshold, one_class_per_track=args.one_class_per_track,
        precision=args.precision, io_overlap=not args.no_io_overlap, compile=args.compile)
    return SegmentRun(options).run()


def run_models(args: argparse.Namespace) -> int:
    from dvis.inference.zoo import format_table, model_rows

    print(format_table(model_rows()))
    print("\nRun one: dvis segment VIDEO --model NAME [--weights FILE.pth] --out DIR  "
          "(a preset needs its checkpoint: docs/models.md says where to get each)")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of frames, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 frame, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the models: registered, and release presets with their checkpoints",
                              description="Every name --model accepts besides a folder: task, dataset, backbone, "
                                          "mode, classes and where the weights come from.")
    p.set_defaults(func=run_models)

    p = subparsers.add_parser(
        "segment", help="segment and track objects in videos",
        description="Segment and track videos: video files, frame folders, folders of those, or a "
                    "YouTube-VIS annotation JSON. Writes OUT/results.json (VIS), OUT/pred.json + "
                    "OUT/pan_pred/ (VPS) or OUT/vss/ (VSS), and OUT/<video>.mp4 overlays. Resumes "
                    "interrupted runs; shards over torchrun ranks (RANK / WORLD_SIZE).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video file, folder of frames, folder of videos/frame folders, or YouTube-VIS JSON")
    p.add_argument("--model", required=True, help="registered name (e.g. synthetic-demo), model folder, "
                   "or release preset name (with --weights)")
    p.add_argument("--weights", help="released DVIS checkpoint (.pth) for a preset --model")
    p.add_argument("--mode", choices=MODES, help="default: the model's")
    p.add_argument("--clip-len", type=_positive_int, metavar="N",
                   help="semi-online clip length in frames (required with --mode semi-online)")
    p.add_argument("--task", choices=TASKS, help="default: the model's")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--no-render", action="store_true", help="do not write overlay videos")
    p.add_argument("--frames-root", help="frames folder for a YouTube-VIS JSON (default: JPEGImages/ beside it)")
    p.add_argument("--spill-dir", help="where per-frame arrays are spilled (default: the system temp folder)")
    p.add_argument("--spill-dtype", choices=("float32", "float16"), default="float32",
                   help="float16 halves the spill's disk use (results may differ on boundary pixels)")
    p.add_argument("--max-num", type=int, help="VIS: (query, class) pairs kept per video (default: the model's)")
    p.add_argument("--score-threshold", type=float, default=0.0,
                   help="VIS: keep results with score >= this (default 0: all, as benchmark servers expect)")
    p.add_argument("--one-class-per-track", action="store_true",
                   help="VIS: only each track's best class in results.json (default: the top (query, class) "
                        "pairs, YouTube-VIS style, so a track can appear with several classes)")
    p.add_argument("--render-threshold", type=float, default=0.3,
                   help="overlay: draw tracks whose best score is >= this (default 0.3)")
    p.add_argument("--merge-timeout", type=float, help="rank 0: seconds to wait for other ranks (default: forever)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="segmenter arithmetic: fp32 (exact, default) or bf16 (fast path: bfloat16 autocast, "
                        "see docs/model.md for its measured speed-up and deviation)")
    p.add_argument("--compile", action="store_true",
                   help="run the segmenter through torch.compile: ~30 s to compile per frame size, then faster "
                        "(measured in docs/model.md); for long videos")
    p.add_argument("--no-io-overlap", action="store_true",
                   help="decode, draw and encode in the main thread, taking turns with the model (default: in "
                        "background threads, overlapping it; see docs/model.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS)  # = --no-progress
    p.set_defaults(func=run_segment)
