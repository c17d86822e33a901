"""Peak host memory (ru_maxrss) of streaming inference on long videos, per mode and length.

Each case runs in its own subprocess: a model (default the shipped ``synthetic-demo``, Q = 20,
C = 64; ``--model tiny`` for tests/test_model_io.py's tiny random model, Q = 5, C = 16), frames
generated on the fly (a moving square over a gradient, never all held), ``VideoPredictor`` on the
frame generator (task vis, spills in the system temp folder). Besides the peak, each case reports
the peak reached before the offline refiner runs ("pass 1") and before pass 2, so that growth can
be told apart. The ``in-memory-*`` rows run ``DVIS.forward`` on the same frames for comparison. The
"baseline" is the same process with the model loaded and no frames run. Usage:

    python benchmarks/long_video.py                       # 100, 1 000, 5 000 frames, all modes
    python benchmarks/long_video.py --frames 200 2000 --modes offline semi-online
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


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def load(name: str):
    sys.path.insert(0, str(ROOT / "tests"))
    import torch

    from dvis.modeling.dvis import DVIS

    if name == "tiny":
        from test_model_io import tiny_config

        torch.manual_seed(0)
        return DVIS(tiny_config()).eval()
    from dvis.inference.registry import load_model

    return load_model(name, device="cpu")


def record_phases(phases: dict) -> None:
    """Note the peak RSS when the refiner starts and when pass 1 returns (offline modes)."""
    from dvis.inference import engine, predictor
    from dvis.modeling import pipeline

    refine, analyse = pipeline.refine_clips, engine.analyse_video

    def refine_clips(*args, **kwargs):
        phases["before_refiner_mb"] = peak_mb()
        return refine(*args, **kwargs)

    def analyse_video(*args, **kwargs):
        result = analyse(*args, **kwargs)
        phases["after_pass1_mb"] = peak_mb()
        return result

    pipeline.refine_clips = refine_clips
    engine.analyse_video = predictor.analyse_video = analyse_video


def child(mode: str, count: int, height: int, width: int, window: int, model_name: str) -> None:
    import torch

    from dvis.inference.predictor import VideoPredictor

    torch.set_num_threads(2)
    in_memory = mode.startswith("in-memory-")
    mode = mode.removeprefix("in-memory-")
    model = load(model_name)
    phases: dict = {}
    record_phases(phases)
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
    print(json.dumps({"peak_mb": peak_mb(), "seconds": seconds, **phases,
                      "instances": 0 if instances is None else len(instances.scores)}))


def run_case(mode: str, count: int, args) -> dict:
    command = [sys.executable, __file__, "--child", mode, str(count), "--size", str(args.size[0]),
               str(args.size[1]), "--window", str(args.window), "--model", args.model]
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
    p.add_argument("--model", default="synthetic-demo", help="registered model name or folder, or 'tiny'")
    p.add_argument("--child", nargs=2, metavar=("MODE", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.size[0], args.size[1], args.window, args.model)
        return
    base = run_case("online", 0, args)
    print(f"model {args.model}, {args.size[0]}x{args.size[1]} frames, window {args.window}, task vis; "
          f"baseline (model loaded, no frames): {base['peak_mb']:.0f} MB; cells: peak (peak after pass 1 "
          f"[before the refiner]) and time")
    header = "| mode | " + " | ".join(f"{n} frames" for n in args.frames) + " |"
    print(header)
    print("|---|" + "---|" * len(args.frames))
    for mode in args.modes:
        cells = []
        for count in args.frames:
            result = run_case(mode, count, args)
            phases = ""
            if "after_pass1_mb" in result:
                refiner = result.get("before_refiner_mb")
                phases = f" ({result['after_pass1_mb']:.0f}" + (f" [{refiner:.0f}]" if refiner else "") + ")"
            cells.append(f"{result['peak_mb']:.0f} MB{phases}, {result['seconds']:.1f} s")
        print(f"| {mode} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
