"""End-to-end throughput of ``dvis segment``'s own code path (``SegmentRun``) on a synthetic video.

    python benchmarks/throughput.py [--frames 8] [--height 480 --width 640] [--modes minvis online offline]
        [--precisions fp32 bf16] [--overlaps on off] [--repeats 1] [--threads 2] [--device cpu] [--no-render]
        [--preset dvis-offline-ovis-r50] [--workdir DIR] [--stream]

Set-up (once, cached in ``--workdir``): a release-format checkpoint of the preset with random
weights (the key names and shapes of the released DVIS_Offline_R50 OVIS file from
``tests/data/official_layout``; weights ~ N(0, 1/fan_in), norms 1, biases 0) and an H x W mp4 of
moving textured shapes. Each (mode, precision) run is a fresh subprocess (its own peak RSS), runs
interleaved over ``--repeats`` rounds; the table shows medians. The preset resizes frames to its
``min_size_test`` (OVIS R50: 360) before the segmenter, as ``dvis segment`` does.

Columns: frames/s of the whole run after model loading; the share of that time the main thread
spent in decode (both decodes: analysis and overlay), segmenter, tracker (or MinVIS matching),
refiner (with the tracker's ``frame_forward`` and the refiner's mask logits), render (drawing
overlays), encode (the overlay's mp4 encoder) and other (resizing, post-processing, spills, result
files); "in bg": decode / render / encode time spent in background threads instead (``--overlap
on``, the default of ``dvis segment``: it overlaps the model), "model": the share of the run the
model (segmenter + tracker + refiner) was busy; peak RSS. ``--overlap on off`` runs both side by
side (``off`` = ``dvis segment --no-io-overlap``).
``--stream`` adds a row per online mode for ``VideoPredictor.stream`` on the same frames.
On a shared machine only ratios within one table mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYOUT = REPO / "tests" / "data" / "official_layout" / "official_keys_ovis_r50_offline.json"
PARTS = ("decode", "segmenter", "tracker", "refiner", "render", "encode", "other")


# ------------------------------------------------------------------------------------ set-up
def random_release_checkpoint(path: Path, seed: int = 0) -> None:
    """A ``{"model": state}`` .pth with the released R50 keys and sensibly scaled random values."""
    import torch

    layout = json.loads(LAYOUT.read_text())["keys"]
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith(("running_var", "weight")) and len(shape) == 1:
            state[key] = torch.ones(shape)  # norm scales, BN variances
        elif len(shape) == 1 and not key.endswith("level_embed"):
            state[key] = torch.zeros(shape)  # biases, BN means
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else shape[0]
            state[key] = torch.randn(shape, generator=generator) / fan_in ** 0.5
    torch.save({"model": state}, path)


def synthetic_video(path: Path, frames: int, height: int, width: int) -> None:
    """Moving textured discs over a gradient (compressible like a real video, unlike noise)."""
    import numpy as np

    from dvis.data.writer import VideoWriter

    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) * 127 // (height + width)], -1)
    with VideoWriter(path, 10.0) as writer:
        for t in range(frames):
            frame = background.astype(np.uint8).copy()
            for k, colour in enumerate(((230, 40, 40), (40, 200, 60), (50, 80, 230))):
                cy = height * (0.3 + 0.2 * k) + 10 * np.sin(0.3 * t + k)
                cx = width * (0.2 + 0.05 * t % 0.6 + 0.1 * k)
                disc = (ys - cy) ** 2 + (xs - cx) ** 2 < (height / (6 + k)) ** 2
                frame[disc] = np.asarray(colour) + ((xs[disc] // 8 + ys[disc] // 8) % 2 * 20)[:, None]
            writer.write(frame)


# --------------------------------------------------------------------------------- timing
class Timers:
    """Wall time per part, accumulated by wrapping the functions each part consists of."""

    def __init__(self, synchronize=None) -> None:
        self.seconds: dict[str, float] = defaultdict(float)  # part (main thread) or "part@bg"
        self.sync = synchronize or (lambda: None)  # CUDA: wait for queued work, so time lands on its part

    @staticmethod
    def key(part: str) -> str:
        return part if threading.current_thread() is threading.main_thread() else f"{part}@bg"

    def wrap(self, owner, name: str, part: str) -> None:
        original = getattr(owner, name)
        seconds, sync = self.seconds, self.sync

        def timed(*args, **kwargs):
            sync()
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                sync()
                seconds[Timers.key(part)] += time.perf_counter() - start

        setattr(owner, name, timed)

    def wrap_iterator(self, owner, name: str, part: str) -> None:
        """``owner.name`` returns an iterator: time each ``next`` (the decoding of one frame)."""
        original = getattr(owner, name)
        seconds = self.seconds

        def timed(*args, **kwargs):
            iterator = iter(original(*args, **kwargs))
            while True:
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    seconds[Timers.key(part)] += time.perf_counter() - start
                yield item

        setattr(owner, name, timed)


def instrument(device: str) -> Timers:
    import dvis.inference.render as render
    import dvis.modeling.pipeline as pipeline
    from dvis.data.video import VideoFile
    from dvis.data.writer import VideoWriter
    from dvis.modeling.refiner import TemporalRefiner
    from dvis.modeling.segmenter import Mask2FormerSegmenter
    from dvis.modeling.tracker import ReferringTracker

    import torch

    timers = Timers(torch.cuda.synchronize if device.startswith("cuda") else None)
    timers.wrap_iterator(VideoFile, "__iter__", "decode")
    timers.wrap(Mask2FormerSegmenter, "forward", "segmenter")
    timers.wrap(ReferringTracker, "forward", "tracker")
    timers.wrap(pipeline, "minvis_match", "tracker")
    timers.wrap(ReferringTracker, "frame_forward", "refiner")
    timers.wrap(TemporalRefiner, "forward", "refiner")
    timers.wrap(pipeline.RefinedMasks, "_window", "refiner")
    timers.wrap(render, "render_frame", "render")
    timers.wrap(VideoWriter, "write", "encode")
    timers.wrap(VideoWriter, "__exit__", "encode")  # flushes the encoder
    return timers


# ------------------------------------------------------------------------------------ child
def child(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    timers = instrument(args.device)
    from dvis.inference.segment import SegmentOptions, SegmentRun

    work = Path(args.workdir)
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    if args.stream:
        return _stream_child(args, work, timers)
    options = SegmentOptions(inputs=[str(work / "video.mp4")], out=str(out), model=args.preset,
                             weights=str(work / "release.pth"), mode=args.mode, device=args.device,
                             render=not args.no_render, precision=args.precision, quiet=True,
                             io_overlap=args.overlap == "on",
                             spill_dir=str(work))
    run = SegmentRun(options)
    load = Timers()
    load.wrap(run, "_start", "load")
    start = time.perf_counter()
    run.run()
    total = time.perf_counter() - start - load.seconds["load"]
    return _result(timers, total, args.frames)


def _stream_child(args: argparse.Namespace, work: Path, timers: Timers) -> dict:
    from dvis.data.video import open_video
    from dvis.inference.predictor import VideoPredictor

    predictor = VideoPredictor.from_pretrained(args.preset, device=args.device, weights=str(work / "release.pth"),
                                               precision=args.precision)
    start = time.perf_counter()
    count = sum(1 for _ in predictor.stream(open_video(str(work / "video.mp4")), mode=args.mode))
    assert count == args.frames, f"stream gave {count} frames, expected {args.frames}"
    return _result(timers, time.perf_counter() - start, args.frames)


def _result(timers: Timers, total: float, frames: int) -> dict:
    parts = {part: timers.seconds.get(part, 0.0) for part in PARTS if part != "other"}
    parts["other"] = max(0.0, total - sum(parts.values()))
    parts["in bg"] = sum(seconds for key, seconds in timers.seconds.items() if key.endswith("@bg"))
    parts["model"] = sum(parts[p] for p in ("segmenter", "tracker", "refiner"))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": total, "fps": frames / total, "parts": parts, "peak_rss_mb": peak_kib / 1024}


# ----------------------------------------------------------------------------------- parent
def prepare(args: argparse.Namespace) -> None:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "release.pth").exists():
        random_release_checkpoint(work / "release.pth")
    video = work / "video.mp4"
    stamp = work / "video.json"
    wanted = {"frames": args.frames, "height": args.height, "width": args.width}
    if not video.exists() or not stamp.exists() or json.loads(stamp.read_text()) != wanted:
        synthetic_video(video, args.frames, args.height, args.width)
        stamp.write_text(json.dumps(wanted))


def run_child(args: argparse.Namespace, run: tuple) -> dict:
    mode, precision, stream, overlap = run
    command = [sys.executable, __file__, "--child", "--mode", mode, "--precision", precision,
               "--frames", str(args.frames), "--threads", str(args.threads), "--device", args.device,
               "--preset", args.preset, "--workdir", args.workdir, "--overlap", overlap]
    command += ["--no-render"] * args.no_render + ["--stream"] * stream
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{mode}/{precision}/overlap {overlap} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


COLUMNS = (*PARTS, "in bg", "model")


def print_table(rows: dict, args: argparse.Namespace) -> None:
    print(f"{args.frames} frames {args.width}x{args.height}, preset {args.preset}, {args.threads} threads, "
          f"device {args.device}, render {'off' if args.no_render else 'on'}, medians of {args.repeats}")
    header = (f"{'run':<28} {'frames/s':>8} {'vs fp32':>7} {'vs off':>6} " + " ".join(f"{p:>9}" for p in COLUMNS)
              + f" {'peak RSS':>9}")
    print(header)

    def fps_of(key) -> float:
        return statistics.median(r["fps"] for r in rows[key]) if key in rows else float("nan")

    for (mode, precision, stream, overlap), results in rows.items():
        fps = fps_of((mode, precision, stream, overlap))
        ratio = fps / fps_of((mode, "fp32", stream, overlap))
        overlap_ratio = fps / fps_of((mode, precision, stream, "off"))
        total = statistics.median(r["seconds"] for r in results)
        shares = " ".join(f"{100 * statistics.median(r['parts'][p] for r in results) / total:8.1f}%" for p in COLUMNS)
        rss = statistics.median(r["peak_rss_mb"] for r in results)
        name = f"{mode}{' stream' if stream else ''} {precision} overlap {overlap}"
        print(f"{name:<28} {fps:8.3f} {ratio:6.2f}x {overlap_ratio:5.2f}x {shares} {rss:7.0f}MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--modes", nargs="+", default=["minvis", "online", "offline"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--overlaps", nargs="+", default=["on", "off"], choices=["on", "off"],
                        help="decode / draw / encode in background threads (on, dvis segment's default) or not")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="dvis-offline-ovis-r50")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "dvis-throughput"))
    parser.add_argument("--no-render", action="store_true")
    parser.add_argument("--stream", action="store_true", help="also time VideoPredictor.stream (online modes)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--overlap", default="on", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    prepare(args)
    runs = [(mode, precision, False, overlap) for mode in args.modes for precision in args.precisions
            for overlap in args.overlaps]
    if args.stream:
        runs += [(mode, precision, True, "on") for mode in args.modes if mode != "offline"
                 for precision in args.precisions]
    rows: dict = defaultdict(list)
    for _ in range(args.repeats):
        for run in runs:  # interleaved: the load of a shared machine hits all alike
            rows[run].append(run_child(args, run))
    print_table(rows, args)


if __name__ == "__main__":
    main()
