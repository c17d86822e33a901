"""``python -m dvis.demo`` (``make demo``): offline DVIS on a synthetic video with heavy occlusion.

Generates one synthetic video (:mod:`dvis.data.synthetic`, fixed seed) into ``OUT/data``, runs
``dvis segment`` with the offline mode of the ``synthetic-demo`` model (or ``--model DIR`` /
``$DVIS_DEMO_MODEL``), writes ``OUT/results.json`` and the overlay ``OUT/<video>.mp4``, and prints
the YouTube-VIS AP of the result against the generated ground truth.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from dvis.errors import DVISError

DEFAULT_MODEL = "synthetic-demo"
AP_KEYS = ("AP", "AP50", "AP75", "AR1", "AR10", "AP_light", "AP_medium", "AP_heavy")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dvis.demo", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.environ.get("DVIS_DEMO_MODEL", DEFAULT_MODEL),
                   help="model name or folder (default: $DVIS_DEMO_MODEL or synthetic-demo)")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("HEIGHT", "WIDTH"))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS)  # old spelling
    return p.parse_args(argv)


def check_model(model: str) -> None:
    """Fail early, with what to do, when the demo model is not installed."""
    from dvis.inference.registry import REGISTERED, registered_folder

    if model in REGISTERED and not (registered_folder(model) / "config.yaml").is_file():
        raise DVISError(f"the demo model {model!r} is not installed (expected config.yaml and model.safetensors "
                        f"in {registered_folder(model)}); train it (docs/usage.md) or pass --model DIR")


def run(args: argparse.Namespace) -> dict:
    from dvis.data.synthetic import generate
    from dvis.evaluation.ytvis import evaluate_files
    from dvis.inference.segment import PARTIAL_DIR, SegmentOptions, SegmentRun

    check_model(args.model)
    out = Path(args.out)
    annotations = generate(out / "data", videos=1, frames=args.frames, seed=args.seed, height=args.size[0],
                           width=args.size[1], occlusion="heavy", overwrite=True)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)  # always recompute
    options = SegmentOptions(inputs=[str(annotations)], out=str(out), model=args.model, mode="offline",
                             task="vis", device=args.device, quiet=args.no_progress)
    SegmentRun(options).run()
    result = evaluate_files(annotations, out / "results.json")
    print(f"\nvideo: {annotations.parent / 'JPEGImages'} ({args.frames} frames, heavy occlusion, seed {args.seed})")
    print(f"overlay: {sorted(out.glob('*.mp4'))[0]}\nresults: {out / 'results.json'}")
    for key in AP_KEYS:
        value = result[key]
        print(f"{key:<10} {'n/a' if value is None or value == -1.0 else f'{100 * value:.1f}'}")
    return result


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except DVISError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
