"""``dvis train segmenter|tracker|refiner --config FILE [KEY=VALUE ...]``."""

from __future__ import annotations

import argparse
import os

STAGES = ("segmenter", "tracker", "refiner")  # = dvis.training.config.STAGES (not imported: keeps `dvis -h` light)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one DVIS stage (segmenter, tracker or refiner)",
        description="Train one stage with the earlier stages frozen. Multi-GPU / multi-node: "
                    "torchrun --nproc_per_node=N -m dvis.cli train ...",
    )
    parser.add_argument("stage", choices=STAGES, help="which stage to train (the earlier ones are frozen)")
    # overrides follow the file: `--config FILE KEY=VALUE ...` (argparse cannot take positionals after options)
    parser.add_argument("--config", required=True, nargs="+", metavar=("FILE", "KEY=VALUE"),
                        help="training YAML (see configs/), then dotted overrides, e.g. solver.max_iter=100")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/checkpoints/last.pt if it exists (without --resume, a run "
                             "refuses an output_dir that holds one)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda or cuda:N (default auto; under torchrun each rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS)  # = --no-progress
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvis.training import distributed
    from dvis.training.config import load_train_config
    from dvis.training.loop import train

    config = load_train_config(args.config[0], args.config[1:])
    try:
        result = train(config, args.stage, resume=args.resume, device=args.device, progress=not args.no_progress)
    finally:
        distributed.teardown()
    if result.model_dir is not None and os.environ.get("RANK", "0") == "0":
        print(f"trained {args.stage} for {result.iteration} iterations -> {result.model_dir}")
    return 0
