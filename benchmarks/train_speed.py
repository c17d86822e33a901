"""Seconds per training iteration of each stage, this tree against another revision, side by side.

    .venv/bin/python benchmarks/train_speed.py [--baseline REV] [--iterations 20] [--rounds 2]

Runs the synthetic configs (``configs/synthetic/*.yaml``, one thread, as benchmarks/ablations.py
runs its jobs) for ``--iterations`` iterations after 3 warm-up iterations, in a fresh process per
(tree, stage, round), alternating the trees so that both see the same machine load. The baseline
revision is checked out into a temporary git worktree and imported from there. Data: a
50-video synthetic set (generated once under --work); the segmenter is the shipped
``synthetic-demo``'s; segmenter outputs are cached per tree (cache build time not counted). Each tree runs its own ``configs/synthetic`` files (validation off),
so a change of the recipe in those files (clip length, points) shows in the numbers.
Prints a table of median s/iteration and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("segmenter", "tracker", "refiner")
DEMO = ROOT / "src" / "dvis" / "models" / "synthetic-demo"

CHILD = r"""
import json, shutil, sys, time
import torch
from dvis.training.config import load_train_config
from dvis.training.loop import Trainer
stage, config, out, iterations, overrides = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
torch.set_num_threads(1)
shutil.rmtree(out, ignore_errors=True)
trainer = Trainer(load_train_config(config, [f"output_dir={out}", *overrides]), stage, device="cpu", progress=False)
trainer.train(stop_at=3)
started = time.perf_counter()
trainer.train(stop_at=3 + iterations)
print(json.dumps({"seconds_per_iteration": (time.perf_counter() - started) / iterations}))
"""


def overrides(stage: str, work: Path, tree_name: str, tree: Path) -> list[str]:
    data = work / "data"
    knows_validation = "ValidationConfig" in (tree / "src" / "dvis" / "training" / "config.py").read_text()
    common = (["validation.annotations=null"] if knows_validation else []) + [f"data.root={data}", "data.synthetic.videos=50", "solver.checkpoint_period=100000",
              "solver.log_period=100000", "solver.max_iter=4000"]
    if stage == "segmenter":
        return common + [f"data.root={work / 'segmenter_data'}", "data.synthetic.videos=50"]
    init = work / "segmenter" if stage == "tracker" else DEMO
    return common + [f"init.model={init}", f"cache.dir={work / ('cache-' + tree_name)}"]


def run_once(tree: Path, tree_name: str, stage: str, work: Path, iterations: int) -> float:
    out = work / f"run-{tree_name}-{stage}"
    command = [sys.executable, "-c", CHILD, stage, str(tree / "configs" / "synthetic" / f"{stage}.yaml"), str(out),
               str(iterations), *overrides(stage, work, tree_name, tree)]
    env = {"PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"{tree_name} {stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds_per_iteration"]


def segmenter_only(work: Path) -> None:
    """The shipped demo's segmenter as a segmenter-stage folder (the tracker stage's init)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "src"))
    from ablations import segmenter_folder

    segmenter_folder(DEMO, work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="4e9dbf7", help="git revision to compare with (default: stop 11's main)")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--work", default=str(ROOT / "runs" / "train_speed"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    segmenter_only(work)
    with tempfile.TemporaryDirectory(prefix="dvis-baseline-") as tmp:
        baseline = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), args.baseline],
                       check=True, capture_output=True)
        try:
            times: dict[tuple[str, str], list[float]] = {}
            for stage in args.stages:
                for round_index in range(args.rounds):
                    trees = [("baseline", baseline), ("this", ROOT)]
                    for name, tree in (trees if round_index % 2 == 0 else trees[::-1]):
                        seconds = run_once(tree, name, stage, work, args.iterations)
                        times.setdefault((name, stage), []).append(seconds)
                        print(f"  {stage:9s} {name:8s} round {round_index}: {seconds:.3f} s/it", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False)
    print(f"\n| stage | {args.baseline} s/it | this tree s/it | speed-up |\n|---|---|---|---|")
    for stage in args.stages:
        before = statistics.median(times[("baseline", stage)])
        after = statistics.median(times[("this", stage)])
        print(f"| {stage} | {before:.3f} | {after:.3f} | {before / after:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
