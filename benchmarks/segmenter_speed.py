"""Segmenter seconds per frame, float32 path vs the bf16 fast path, measured side by side.

    python benchmarks/segmenter_speed.py [--backbone r50|swin-l] [--height 480 --width 640]
        [--frames 1] [--repeats 3] [--threads 2] [--device cpu|cuda] [--profile] [--compile]

Builds the preset's segmenter (random weights; speed does not depend on their values), then
alternates fp32 and bf16 calls on the same input ``--repeats`` times after one warm-up call each,
and prints the medians and their ratio (on a shared machine only the ratio means anything).
``--profile`` prints the top operators of one call per path (torch.profiler, CPU time).
``--compile`` also times the bf16 path with ``Mask2FormerSegmenter.compiled`` (``torch.compile``
of transformers' network, as ``dvis segment --compile``): the first call (compile time) and the
steady state.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dvis.modeling.segmenter import Mask2FormerSegmenter, SegmenterConfig


def timed(fn) -> float:
    """Wall seconds of ``fn()``, waiting for queued CUDA work before and after."""
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def profile(model: Mask2FormerSegmenter, pixel_values: torch.Tensor, precision: str, rows: int = 12) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        model(pixel_values, precision=precision)
    print(f"--- {precision}: top operators by self CPU time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="r50", choices=["r50", "swin-l"])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--classes", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Mask2FormerSegmenter(SegmenterConfig.preset(args.backbone, args.classes)).eval().to(args.device)
    frames = torch.randint(0, 256, (args.frames, 3, args.height, args.width), dtype=torch.uint8)
    pixel_values, _ = model.preprocess(frames.to(args.device))
    calls = {precision: (lambda p=precision: model(pixel_values, precision=p)) for precision in ("fp32", "bf16")}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for call in calls.values():
            call()  # warm-up (oneDNN primitive caches, allocator)
        for _ in range(args.repeats):
            for name, call in calls.items():
                seconds[name].append(timed(call) / args.frames)
        fp32, bf16 = (statistics.median(seconds[name]) for name in ("fp32", "bf16"))
        print(f"segmenter {args.backbone} on {args.device}, {args.frames} frame(s) {args.width}x{args.height}, {args.threads} threads, "
              f"medians of {args.repeats} alternating calls")
        print(f"fp32 {fp32:.3f} s/frame   bf16 {bf16:.3f} s/frame   speed-up {fp32 / bf16:.2f}x")
        print("all fp32:", " ".join(f"{s:.3f}" for s in seconds["fp32"]), " all bf16:",
              " ".join(f"{s:.3f}" for s in seconds["bf16"]))
        if args.profile:
            for name in calls:
                profile(model, pixel_values, name)
        if args.compile:
            model.compiled = True  # the product's path (dvis segment --compile)
            first = timed(calls["bf16"])
            steady = statistics.median(timed(calls["bf16"]) for _ in range(args.repeats))
            model.compiled = False
            eager = statistics.median(timed(calls["bf16"]) for _ in range(args.repeats))
            print(f"torch.compile bf16: first call {first:.1f} s, steady {steady / args.frames:.3f} s/frame, "
                  f"eager bf16 alongside {eager / args.frames:.3f} s/frame")


if __name__ == "__main__":
    main()
