"""Parameters, MACs and ms/frame of the segmenter, tracker and refiner (like the paper's Table 9).

    python benchmarks/components.py [--queries 100] [--frames 30] [--height 480 --width 640]
        [--classes 25] [--threads 2] [--backbone r50|swin-l|none] [--repeats 3]

Mask features are at stride 4 of the input (480x640 -> 120x160). The segmenter row is one frame
of that size (its MACs and ms are per frame too). The "refiner" row excludes ``frame_forward``
(the refiner's cross-attention memory, computed by the tracker's blocks: ``tracker.frame_forward``
in the release too); "refiner + frame_forward" is both, as offline inference runs them. The
tracker and refiner are timed in inference mode (last-block masks only) and, for comparison, in
"all blocks" mode, which also computes every block's mask logits as the released code does at
inference; the last-block outputs of both are checked to be equal. The team's reference
(../shared/SPEC.md, outside this repository) gives the released code's figures on this machine
kind: tracker 198 ms/frame, refiner 344 ms/frame (Q=100, T=30, 120x160, 2 threads).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dvis.modeling.refiner import RefinerConfig, TemporalRefiner
from dvis.modeling.tracker import ReferringTracker, TrackerConfig


def count_macs(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() // 2


def time_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def assert_same(fast, full, tol: float = 1e-4) -> None:
    """The inference path must give the all-blocks path's last-block outputs."""
    for name in ("pred_logits", "pred_masks", "pred_embds"):
        err = (getattr(fast, name) - getattr(full, name)).abs().max().item()
        assert err <= tol, f"{name} differs by {err}"


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--classes", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone", default="r50", choices=["r50", "swin-l", "none"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    frames, queries, dim = args.frames, args.queries, 256
    h, w = args.height // 4, args.width // 4
    embeds = torch.randn(1, frames, queries, dim)
    features = torch.randn(1, frames, dim, h, w)
    tracker = ReferringTracker(TrackerConfig(num_classes=args.classes)).eval()
    refiner = TemporalRefiner(RefinerConfig(num_classes=args.classes)).eval()
    rows = []

    with torch.inference_mode():
        if args.backbone != "none":
            rows.append(segmenter_row(args))

        def track():
            return tracker(embeds, features)[0]

        def track_all_blocks():
            return tracker(embeds, features, return_aux=True)[0]

        fast, full = track(), track_all_blocks()
        assert_same(fast, full)
        rows.append(("tracker", params(tracker), count_macs(track) / frames,
                     time_ms(track, args.repeats) / frames, time_ms(track_all_blocks, 1) / frames))

        track_embeds = fast.pred_embds
        memory = tracker.frame_forward(embeds)

        def refine():
            return refiner(track_embeds, memory, features)

        def refine_all_blocks():
            return refiner(track_embeds, memory, features, return_aux=True)

        a, b = refine(), refine_all_blocks()
        assert_same(a, b)
        rows.append(("refiner", params(refiner), count_macs(refine) / frames,
                     time_ms(refine, args.repeats) / frames, time_ms(refine_all_blocks, 1) / frames))

        def frame_forward():
            return tracker.frame_forward(embeds)

        rows.append(("frame_forward (offline memory)", 0, count_macs(frame_forward) / frames,
                     time_ms(frame_forward, args.repeats) / frames, float("nan")))

        def refine_with_memory():  # what offline inference runs after the tracker
            return refiner(track_embeds, tracker.frame_forward(embeds), features)

        def refine_with_memory_all_blocks():
            return refiner(track_embeds, tracker.frame_forward(embeds), features, return_aux=True)

        rows.append(("refiner + frame_forward", params(refiner), count_macs(refine_with_memory) / frames,
                     time_ms(refine_with_memory, args.repeats) / frames,
                     time_ms(refine_with_memory_all_blocks, 1) / frames))

    print(f"\nQ={queries} T={frames} input {args.height}x{args.width} (mask features {h}x{w}), "
          f"{args.classes} classes, {args.threads} threads, torch {torch.__version__}\n")
    print("| component | params | GMACs/frame | ms/frame | ms/frame, all blocks' masks |")
    print("|---|---:|---:|---:|---:|")
    for name, n_params, macs, ms, ms_all in rows:
        print(f"| {name} | {n_params:,} | {macs / 1e9:.2f} | {ms:.1f} | {ms_all:.1f} |")


def segmenter_row(args) -> tuple:
    from dvis.modeling.segmenter import Mask2FormerSegmenter, SegmenterConfig

    name = "r50" if args.backbone == "r50" else "swin-l"
    segmenter = Mask2FormerSegmenter(SegmenterConfig.preset(name, args.classes)).eval()
    pixels = torch.randn(1, 3, args.height, args.width)

    def run():
        return segmenter(pixels)

    return (f"segmenter ({name})", segmenter.num_parameters(), count_macs(run), time_ms(run, 1), float("nan"))


if __name__ == "__main__":
    main()
