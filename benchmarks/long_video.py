"""Peak host memory (ru_maxrss) of streaming inference on long videos, per mode and length.

Each case runs in its own subprocess: a tiny random DVIS model (tests/test_model_io.py's
tiny_config), frames generated on the fly (a moving square over a gradient, never all held),
``VideoPredictor`` on the frame generator (task vis, spills in the system temp folder). The
``in-memory-*`` rows run ``DVIS.forward`` on the same frames for comparison. The "baseline" row is the same process with the model loaded and no frames run. Usage:

    python benchmarks/long_video.py                       # 100, 1 000, 5 000 frames, all modes
    python benchmarks/long_video.py --frames 100 1000 --modes online offline
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODES = ("minvis", "online", "offline", "semi-online")
REFERENCE = ("in-memory-online", "in-memory-offline")  # DVIS.forward, for comparison


def frames(count: int, height: int, width: int):
    """Frames one at a time: (H, W, 3) uint8, a square moving over a static gradient."""
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 96)], -1).astype(np.uint8)
    side = min(height, width) // 4
    for t in range(count):
        frame = background.copy()
        y = (t * 3) % (height - side)
        x = (t * 5) % (width - side)
        frame[y:y + side, x:x + side] = (230, 40, 40)
        yield frame


def child(mode: str, count: int, height: int, width: int, window: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from test_model_io import tiny_config

    from dvis.inference.predictor import VideoPredictor
    from dvis.modeling.dvis import DVIS

    torch.set_num_threads(2)
    torch.manual_seed(0)
    in_memory = mode.startswith("in-memory-")
    mode = mode.removeprefix("in-memory-")
    model = DVIS(tiny_config()).eval()
    predictor = VideoPredictor(model, mode=mode, task="vis", clip_len=30, window_size=window)
    start = time.perf_counter()
    if in_memory and count:  # DVIS.forward: all frames and all queries' masks in memory
        from dvis.inference.transforms import resize_video

        config = model.config.inference
        video = resize_video(frames(count, height, width), config.min_size_test, config.max_size_test)
        instances = model([video], output_sizes=[(height, width)], mode=mode, task="vis", clip_len=30,
                          window_size=window)[0]
    else:
        instances = predictor(frames(count, height, width)) if count else None
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"peak_mb": peak_mb, "seconds": seconds,
                      "instances": 0 if instances is None else len(instances.scores)}))


def run_case(mode: str, count: int, args) -> dict:
    command = [sys.executable, __file__, "--child", mode, str(count), "--size", str(args.size[0]),
               str(args.size[1]), "--window", str(args.window)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case {mode} x {count} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[100, 1000, 5000])
    p.add_argument("--modes", nargs="+", choices=MODES + REFERENCE, default=list(MODES + REFERENCE))
    p.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    p.add_argument("--window", type=int, default=30)
    p.add_argument("--child", nargs=2, metavar=("MODE", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.size[0], args.size[1], args.window)
        return
    base = run_case("online", 0, args)
    print(f"tiny model, {args.size[0]}x{args.size[1]} frames, window {args.window}, task vis; "
          f"baseline (model loaded, no frames): {base['peak_mb']:.0f} MB")
    header = "| mode | " + " | ".join(f"{n} frames" for n in args.frames) + " |"
    print(header)
    print("|---|" + "---|" * len(args.frames))
    for mode in args.modes:
        cells = []
        for count in args.frames:
            result = run_case(mode, count, args)
            cells.append(f"{result['peak_mb']:.0f} MB ({result['seconds']:.1f} s)")
        print(f"| {mode} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
