"""``dvis synth``: write the synthetic occlusion benchmark."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from dvis.data.synth_scene import OCCLUSION_LEVELS
from dvis.errors import InputError


def _range(text: str) -> tuple[int, int]:
    """'2-6' -> (2, 6); '4' -> (4, 4)."""
    try:
        parts = [int(p) for p in text.split("-")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX (e.g. 2-6), got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] < 0 or parts[1] < parts[0]:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX with 0 <= MIN <= MAX, got {text!r}")
    return parts[0], parts[1]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write the synthetic occlusion benchmark (YouTube-VIS format, optional VIPSeg panoptic)",
        description="Textured shapes that move, enter, leave and pass behind each other, with "
        "look-alike instances. Writes OUT/JPEGImages/<video>/<frame>.jpg and OUT/annotations.json.",
    )
    parser.add_argument("out", metavar="OUT", help="output folder (must be empty or absent)")
    parser.add_argument("--videos", type=int, default=1, help="number of videos (default 1)")
    parser.add_argument("--frames", type=int, default=60, help="frames per video (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0; same seed, same bytes)")
    parser.add_argument("--height", type=int, default=128, help="frame height (default 128)")
    parser.add_argument("--width", type=int, default=128, help="frame width (default 128)")
    parser.add_argument("--objects", type=_range, default=(2, 6), metavar="MIN-MAX",
                        help="objects per video (default 2-6)")
    parser.add_argument("--occlusion", choices=OCCLUSION_LEVELS, default="medium",
                        help="how much objects overlap on average (default medium)")
    parser.add_argument("--panoptic", action="store_true",
                        help="also write VIPSeg-style panoptic PNGs and panoptic_gt_VIPSeg_val.json")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.set_defaults(func=run_synth)


def run_synth(args) -> int:
    from dvis.data.synthetic import generate

    if args.videos < 1:
        raise InputError(f"--videos must be >= 1, got {args.videos}")
    path = generate(args.out, args.videos, args.frames, args.seed, height=args.height, width=args.width,
                    objects=args.objects, occlusion=args.occlusion, panoptic=args.panoptic,
                    overwrite=args.overwrite)
    with open(path, encoding="utf-8") as handle:
        annotations = json.load(handle)["annotations"]
    levels = Counter(a["occlusion_level"] for a in annotations)
    summary = ", ".join(f"{levels.get(level, 0)} {level}" for level in OCCLUSION_LEVELS)
    print(f"wrote {args.videos} videos x {args.frames} frames, {len(annotations)} objects ({summary}) -> {path}")
    return 0
