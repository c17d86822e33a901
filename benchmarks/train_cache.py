"""Iteration time of the tracker and refiner stages with and without the segmenter-output cache.

Uses the synthetic configs (configs/synthetic/*.yaml: tiny R50-layout segmenter, 128x128 frames,
tracker/refiner hidden 64) on a small generated set, with an untrained segmenter/tracker standing
in for the trained ones (the cost does not depend on the weights). Prints a table:

    .venv/bin/python benchmarks/train_cache.py [--iterations 20] [--threads 2] [--videos 8]

The first iteration (warm-up) is left out of the mean; the cache build is timed separately.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dvis.modeling.dvis import DVIS  # noqa: E402
from dvis.modeling.io import config_from_dict, save_pretrained  # noqa: E402
from dvis.training.config import load_train_config  # noqa: E402
from dvis.training.loop import Trainer  # noqa: E402


def synthetic(stage: str) -> Path:
    return ROOT / "configs" / "synthetic" / f"{stage}.yaml"


def stand_in_model(work: Path, stage: str) -> Path:
    sections = {"segmenter": load_train_config(synthetic("segmenter")).model["segmenter"]}
    if stage == "refiner":
        sections["tracker"] = load_train_config(synthetic("tracker")).model["tracker"]
    torch.manual_seed(0)
    return save_pretrained(DVIS(config_from_dict(sections)), work / f"init_{stage}")


def run(work: Path, stage: str, cache: str, args) -> dict:
    overrides = [f"init.model={stand_in_model(work, stage)}", f"output_dir={work / f'{stage}_{cache}'}",
                 f"data.root={work / 'data'}", f"data.synthetic.videos={args.videos}",
                 f"solver.max_iter={args.iterations}", f"cache.enabled={cache}", "data.num_workers=1",
                 f"solver.checkpoint_period={args.iterations}"]
    config = load_train_config(synthetic(stage), overrides)
    started = time.perf_counter()
    trainer = Trainer(config, stage, progress=False)
    setup = time.perf_counter() - started
    history = trainer.train().history
    times = [row["time"] for row in history[1:]]
    cache_dir = work / f"{stage}_{cache}" / "segmenter_cache"
    size = sum(p.stat().st_size for p in cache_dir.glob("*")) / 2**20 if cache_dir.exists() else 0.0
    clips = config.solver.batch_size
    return {"stage": stage, "cache": cache, "clips": f"{clips} x {config.data.num_frames}",
            "setup_s": setup, "iter_s": statistics.mean(times), "iter_sd": statistics.pstdev(times), "cache_mb": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for stage in ("tracker", "refiner"):
            for cache in ("off", "on"):
                rows.append(run(work, stage, cache, args))
    print(f"threads={args.threads} iterations={args.iterations} videos={args.videos} (synthetic configs, 128x128)")
    print("| stage | cache | clips x frames | setup (s, incl. cache build) | s / iteration | cache size (MB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['cache']} | {r['clips']} | {r['setup_s']:.1f} | "
              f"{r['iter_s']:.3f} ± {r['iter_sd']:.3f} | {r['cache_mb']:.1f} |")
    for stage in ("tracker", "refiner"):
        off, on = (next(r for r in rows if r["stage"] == stage and r["cache"] == c) for c in ("off", "on"))
        print(f"{stage}: {off['iter_s'] / on['iter_s']:.1f}x faster per iteration with the cache")


if __name__ == "__main__":
    main()
