"""``dvis train STAGE --config FILE [KEY=VALUE ...]``; STAGE (segmenter, tracker or refiner) may also
come after the overrides or between them: ``--config`` takes every word up to the next option."""

from __future__ import annotations

import argparse
import os

from dvis.errors import InputError
from dvis.training.stage_names import STAGES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one DVIS stage (segmenter, tracker or refiner)",
        usage="dvis train STAGE --config FILE [KEY=VALUE ...] [--resume] [--device {auto,cpu,cuda}] "
              "[--no-progress]\n       (STAGE may also follow FILE or the overrides)",
        description="Train one stage with the earlier stages frozen. Multi-GPU / multi-node: "
                    "torchrun --nproc_per_node=N -m dvis.cli train ...",
    )
    parser.add_argument("stage", nargs="?", metavar="STAGE",
                        help=f"which stage to train, one of {', '.join(STAGES)} (the earlier ones are frozen)")
    # overrides follow the file: `--config FILE KEY=VALUE ...`; --config also takes a stage named after
    # them (argparse gives it every word up to the next option), which run() picks out
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

    stage, overrides = split_stage(args.stage, args.config[1:])
    args.stage = stage
    config = load_train_config(args.config[0], overrides)
    try:
        result = train(config, args.stage, resume=args.resume, device=args.device, progress=not args.no_progress)
    finally:
        distributed.teardown()
    if result.model_dir is not None and os.environ.get("RANK", "0") == "0":
        print(f"trained {args.stage} for {result.iteration} iterations -> {result.model_dir}")
    return 0


def split_stage(stage: str | None, words: list[str]) -> tuple[str, list[str]]:
    """(the stage, the overrides) from the STAGE argument and the words after ``--config FILE``."""
    named = [word for word in words if word in STAGES]
    stages = ([stage] if stage is not None else []) + named
    if len(stages) != 1:
        found = f"got {', '.join(stages)}" if stages else "none given"
        raise InputError(f"name one stage to train ({', '.join(STAGES)}): dvis train STAGE --config FILE "
                         f"[KEY=VALUE ...]; {found}")
    if stages[0] not in STAGES:
        raise InputError(f"unknown stage {stages[0]!r}; expected one of {', '.join(STAGES)}")
    return stages[0], [word for word in words if word not in STAGES]
