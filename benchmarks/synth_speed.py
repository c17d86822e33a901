"""Generation speed of the synthetic benchmark (frames/s, JPEG encoding and RLE included).

Run on one core: ``taskset -c 0 python benchmarks/synth_speed.py`` (numpy and Pillow here are
single-threaded anyway). Target: >= 200 frames/s at 128x128. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from dvis.data.synthetic import generate

CASES = [
    (128, 128, "light", False),
    (128, 128, "medium", False),
    (128, 128, "heavy", False),
    (128, 128, "medium", True),
    (256, 256, "medium", False),
    (360, 640, "medium", False),
]


def measure(height: int, width: int, occlusion: str, panoptic: bool, videos: int, frames: int) -> float:
    root = tempfile.mkdtemp(prefix="synth_speed_")
    try:
        start = time.perf_counter()
        generate(os.path.join(root, "set"), videos, frames, seed=0, height=height, width=width,
                 objects=(2, 6), occlusion=occlusion, panoptic=panoptic)
        return videos * frames / (time.perf_counter() - start)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--frames", type=int, default=30)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"synthetic generation speed, {args.videos} videos x {args.frames} frames, objects 2-6, "
          f"{cores} core(s) allowed")
    print(f"{'size':>9} | {'occlusion':>9} | {'panoptic':>8} | {'frames/s':>9}")
    print("-" * 45)
    for height, width, occlusion, panoptic in CASES:
        fps = measure(height, width, occlusion, panoptic, args.videos, args.frames)
        print(f"{height:>4}x{width:<4} | {occlusion:>9} | {str(panoptic):>8} | {fps:>9.0f}")


if __name__ == "__main__":
    main()
