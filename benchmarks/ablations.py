"""The paper's ablations on the synthetic occlusion benchmark (issue 7), trained and evaluated here.

Trains every tracker / refiner variant over several seeds on the frozen synthetic segmenter (its
outputs cached once and shared), evaluates each on a held-out split of long, heavily occluded
videos with the project's own YouTube-VIS evaluation, and writes ``docs/results.md``: tables in
the layout of the paper's Tables 5, 6, 7, 8 and II (mean ± standard deviation over seeds), the
verdict on each claim with its numbers, the commands and the time taken.

    .venv/bin/python benchmarks/ablations.py run [--seeds 0 1 2] [--jobs 2]     # train + evaluate
    .venv/bin/python benchmarks/ablations.py report                            # tables only

Needs the trained synthetic segmenter (``dvis train segmenter --config
configs/synthetic/segmenter.yaml`` -> ``runs/synthetic/segmenter/model``). Every job is a separate
process (``--jobs`` at a time, one thread each) that writes its result atomically, so an
interrupted run continues where it stopped when started again. Variants differ from the
configs in ``configs/synthetic/`` only by the overrides listed in :data:`TRACKERS` / :data:`REFINERS`
(refiners train on the same seed's "dvis" tracker; :data:`CHAIN_REFINERS` on another tracker variant).
``install-demo --chain NAME`` copies seed 0's tracker NAME + its full refiner into the package.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

METRICS = ("AP", "AP50", "AP75", "AR1", "AR10", "AP_light", "AP_medium", "AP_heavy")
CONFIGS = ROOT / "configs" / "synthetic"


@dataclass(frozen=True)
class Variant:
    name: str
    stage: str  # "tracker" or "refiner"
    overrides: tuple[str, ...] = ()
    label: str = ""
    tracker: str = "dvis"  # a refiner's: the tracker variant (same seed) it is trained on


TRACKERS = (
    Variant("dvis", "tracker", (), "RCA, matched queries, paper matching (DVIS)"),
    Variant("standard-ca", "tracker", ("model.tracker.cross_attention=standard",), "standard cross-attention"),
    Variant("init-zero", "tracker", ("model.tracker.initial_value=zero",), "initial value: zero"),
    Variant("init-previous", "tracker", ("model.tracker.initial_value=previous",),
            "initial value: previous tracker output"),
    Variant("init-unmatched", "tracker", ("model.tracker.initial_value=unmatched",),
            "initial value: unmatched segmenter queries"),
    Variant("release-matching", "tracker", ("model.tracker.matching=dvis-release",), "matching dvis-release"),
    # not a row of the paper: DVIS's tracker trained with DVIS++'s "hard" denoising (issue 13.5)
    Variant("match-noise", "tracker", ("model.tracker.match_noise=0.5",),
            "DVIS trained with DVIS++'s hard denoising (match_noise 0.5)"),
    # issue 13.5 recipe trials for the shipped model, compared on the validation split (stop 16)
    Variant("match-noise-0.8", "tracker", ("model.tracker.match_noise=0.8",),
            "hard denoising, match_noise 0.8"),
    Variant("match-noise-long", "tracker", ("model.tracker.match_noise=0.5", "solver.max_iter=6000",
                                            "solver.steps=[4800]"),
            "hard denoising 0.5, 6000 iterations"),
)
REFINERS = (  # all on the seed's "dvis" tracker
    Variant("refiner", "refiner", (), "full refiner"),
    Variant("no-long-term", "refiner", ("model.refiner.use_long_term_attention=false",),
            "without long-term attention"),
    Variant("no-short-term", "refiner", ("model.refiner.use_short_term_conv=false",),
            "without short-term convolution"),
    Variant("no-cross-attention", "refiner", ("model.refiner.use_cross_attention=false",),
            "without cross-attention"),
)
# The full refiner on another tracker variant: the offline half of that variant's chain.
CHAIN_REFINERS = (
    Variant("match-noise-refiner", "refiner", (), "full refiner on the match-noise tracker", "match-noise"),
    Variant("match-noise-0.8-refiner", "refiner", (), "full refiner on the match-noise-0.8 tracker", "match-noise-0.8"),
    Variant("match-noise-long-refiner", "refiner", (), "full refiner on the match-noise-long tracker",
            "match-noise-long"),
    Variant("match-noise-long-refiner-2500", "refiner", ("solver.max_iter=2500", "solver.steps=[2000]"),
            "full refiner, 2500 iterations, on the match-noise-long tracker", "match-noise-long"),
)
VARIANTS = (*TRACKERS, *REFINERS, *CHAIN_REFINERS)
BASE_TRACKERS = tuple(dict.fromkeys(v.tracker for v in (*REFINERS, *CHAIN_REFINERS)))  # kept in git
SEMI_ONLINE_CLIPS = (1, 5, 10, 20)
BY_NAME = {v.name: v for v in VARIANTS}


@dataclass
class Job:
    key: str
    command: list[str]
    done: Path  # exists when the job has finished
    needs: list[str] = field(default_factory=list)


@dataclass
class Plan:
    work: Path
    segmenter: Path
    heldout: Path
    seeds: list[int]
    overrides: tuple[str, ...] = ()  # applied to every training run (after the variant's)
    variants: frozenset[str] | None = None  # None: all
    results: Path | None = None  # evaluations + meta.json (None: under work); committed, see RESULTS

    @property
    def results_dir(self) -> Path:
        return self.results if self.results is not None else self.work / "eval"

    def run_dir(self, variant: Variant, seed: int) -> Path:
        return self.work / f"seed{seed}" / variant.name

    def model_dir(self, variant: Variant, seed: int) -> Path:
        return self.run_dir(variant, seed) / "model"

    def eval_file(self, name: str, seed: int | None, label: str) -> Path:
        return self.results_dir / f"{name}{'' if seed is None else f'-seed{seed}'}-{label}.json"


# ------------------------------------------------------------------------------------ the plan
def train_job(plan: Plan, variant: Variant, seed: int) -> Job:
    init = plan.segmenter if variant.stage == "tracker" else plan.model_dir(BY_NAME[variant.tracker], seed)
    overrides = [f"seed={seed}", f"output_dir={plan.run_dir(variant, seed)}", f"init.model={init}",
                 f"cache.dir={plan.work / 'segmenter_cache'}", *variant.overrides, *plan.overrides]
    command = [sys.executable, "-m", "dvis.cli", "train", variant.stage, "--config",
               str(CONFIGS / f"{variant.stage}.yaml"), *overrides, "--resume", "--device", "cpu", "--no-progress"]
    needs = [] if variant.stage == "tracker" else [f"train/{variant.tracker}/{seed}"]
    return Job(f"train/{variant.name}/{seed}", command, plan.model_dir(variant, seed) / "config.yaml", needs)


def eval_job(plan: Plan, model: Path, name: str, seed: int | None, label: str, mode: str, clip_len: int,
             needs: list[str]) -> Job:
    out = plan.eval_file(name, seed, label)
    command = [sys.executable, __file__, "evaluate", "--model", str(model), "--mode", mode,
               "--clip-len", str(clip_len), "--annotations", str(plan.heldout / "annotations.json"), "--out", str(out)]
    return Job(f"eval/{out.stem}", command, out, needs)


# The order jobs start in: the default chain first (the demo model and Tables 5 / II), then the
# variants one at a time with all their seeds, the paper's strongest claims first, so that an
# interrupted or time-limited run leaves complete rows (every seed) rather than single-seed ones.
PRIORITY = ("dvis", "refiner", "standard-ca", "no-long-term", "init-zero", "match-noise", "match-noise-refiner",
            "init-previous", "release-matching", "no-short-term", "no-cross-attention", "init-unmatched",
            "match-noise-0.8", "match-noise-long", "match-noise-0.8-refiner", "match-noise-long-refiner",
            "match-noise-long-refiner-2500")


def build_jobs(plan: Plan) -> list[Job]:
    jobs = [eval_job(plan, plan.segmenter, name, None, name, name, 0, []) for name in ("minvis", "oracle", "per-frame")]
    wanted = [BY_NAME[name] for name in PRIORITY if plan.variants is None or name in plan.variants]
    for variant in wanted:
        for seed in plan.seeds:
            jobs.append(train_job(plan, variant, seed))
            trained = [jobs[-1].key]
            model = plan.model_dir(variant, seed)
            if variant.stage == "tracker":
                jobs.append(eval_job(plan, model, variant.name, seed, "online", "online", 0, trained))
                continue
            jobs.append(eval_job(plan, model, variant.name, seed, "offline", "offline", 0, trained))
            if variant is REFINERS[0]:
                jobs += [eval_job(plan, model, variant.name, seed, f"clip{n}", "semi-online", n, trained)
                         for n in SEMI_ONLINE_CLIPS]
    return jobs


# --------------------------------------------------------------------------------- scheduling
def still_needed(jobs: list[Job], finished: set[str]) -> list[Job]:
    """The unfinished jobs that something still waits for: every unfinished job with no
    dependents (an evaluation), and the jobs those need. A training whose evaluations are all
    recorded (e.g. in an earlier session whose models are gone) is not rerun."""
    dependents: dict[str, list[str]] = {}
    for job in jobs:
        for need in job.needs:
            dependents.setdefault(need, []).append(job.key)
    needed: set[str] = set()
    for job in reversed(jobs):  # a job comes after the jobs it needs
        if job.key not in finished and (job.key not in dependents or any(d in needed for d in dependents[job.key])):
            needed.add(job.key)
    return [job for job in jobs if job.key in needed]


def run_jobs(jobs: list[Job], parallel: int, log_dir: Path, budget_s: float | None = None,
             on_done=None) -> dict[str, float]:
    """Run the unfinished jobs, ``parallel`` at a time, in list order as their needs finish.

    No job starts once ``budget_s`` seconds have passed (running ones finish); ``on_done(key,
    seconds)`` is called as each job succeeds."""
    begun = time.perf_counter()
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    finished = {job.key for job in jobs if job.done.is_file()}
    pending = still_needed(jobs, finished)
    running: dict[str, tuple[subprocess.Popen, float, Job]] = {}
    walls: dict[str, float] = {}
    skipped = len(jobs) - len(finished) - len(pending)
    print(f"{len(finished)} of {len(jobs)} jobs already done, {skipped} not needed (their evaluations are "
          f"recorded); {len(pending)} to run, {parallel} at a time", flush=True)
    while pending or running:
        out_of_time = budget_s is not None and time.perf_counter() - begun > budget_s
        if out_of_time and not running:
            print(f"time budget of {budget_s / 60:.0f} min spent; {len(pending)} jobs not started "
                  "(run the same command again to continue)", flush=True)
            break
        ready = [] if out_of_time else [j for j in pending if all(n in finished for n in j.needs)]
        for job in ready[: parallel - len(running)]:
            pending.remove(job)
            with open(log_dir / f"{job.key.replace('/', '_')}.log", "w") as log:  # the child keeps its copy
                process = subprocess.Popen(job.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[job.key] = (process, time.perf_counter(), job)
            print(f"start  {job.key}", flush=True)
        if not running:
            blocked = ", ".join(j.key for j in pending)
            raise SystemExit(f"jobs cannot start, a job they need failed: {blocked}")
        time.sleep(2)
        for key, (process, started, job) in list(running.items()):
            if process.poll() is None:
                continue
            del running[key]
            walls[key] = time.perf_counter() - started
            if process.returncode != 0 or not job.done.is_file():
                print(f"FAILED {key} (exit {process.returncode}); log: {log_dir}", flush=True)
                continue
            finished.add(key)
            print(f"done   {key} in {walls[key] / 60:.1f} min", flush=True)
            if on_done is not None:
                on_done(key, walls[key])
    return walls


# --------------------------------------------------------------------------------- evaluation
def evaluate(model_dir: str, mode: str, clip_len: int, annotations: str, out: str) -> dict:
    """Run one model in one mode over the held-out split; write the YouTube-VIS metrics to ``out``.

    Besides the model's modes: ``oracle`` (the segmenter's per-frame masks with oracle
    association) and ``per-frame`` (the segmenter's per-frame mask AP, every frame a video); see
    :mod:`dvis.evaluation.oracle`.
    """
    import numpy as np
    import torch

    from dvis.data.ytvis import YTVISDataset
    from dvis.evaluation.writers import atomic_write_json
    from dvis.evaluation.ytvis import evaluate_tracks
    from dvis.evaluation.ytvis_data import load_ground_truth, parse_results
    from dvis.modeling.io import load_pretrained

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = time.perf_counter()
    dataset = YTVISDataset(annotations, Path(annotations).parent / "JPEGImages")
    gt = load_ground_truth(annotations)
    model = load_pretrained(model_dir).eval()
    videos = (dataset[index] for index in range(len(dataset)))
    if mode in ("oracle", "per-frame"):
        metrics, frames = _segmenter_bounds(model, videos, gt, mode)
    else:
        from dvis.inference.predictor import VideoPredictor

        overrides = {"mode": mode, **({"clip_len": clip_len} if mode == "semi-online" else {})}
        predictor = VideoPredictor(model, **overrides)
        entries, frames = [], 0
        for video in videos:
            instances = predictor(np.stack(list(video.frames())))
            entries += instances.to_ytvis(video.video_id, gt.category_ids)
            frames += video.length
        metrics = evaluate_tracks(gt, parse_results(entries, gt))
    result = {key: metrics[key] for key in METRICS}
    result.update(model=str(model_dir), mode=mode, clip_len=clip_len, frames=frames,
                  seconds=time.perf_counter() - started)
    atomic_write_json(Path(out), result)
    return result


def segmenter_outputs(model, frames, window: int = 8):
    """The segmenter alone on (T, H, W, 3) uint8 frames, ``window`` frames at a time ->
    :class:`dvis.evaluation.oracle.FrameOutputs` (class probabilities, masks at the frames' size)."""
    import numpy as np
    import torch

    from dvis.evaluation.oracle import FrameOutputs
    from dvis.inference.transforms import resize_video
    from dvis.modeling.postprocess import upsample_masks

    config = model.config.inference
    height, width = frames.shape[1:3]
    probs, masks = [], []
    with torch.no_grad():
        for start in range(0, len(frames), window):
            video = resize_video(list(frames[start:start + window]), config.min_size_test, config.max_size_test)
            pixel_values, sizes = model.preprocess([video])
            _, _, logits, mask_logits = model.segment(pixel_values)  # (1, t, Q, K+1), (1, t, Q, h, w)
            probs.append(logits[0].float().softmax(-1)[..., :-1].numpy())
            up = upsample_masks(mask_logits[0].float().transpose(0, 1), sizes[0], (height, width), sigmoid=False)
            masks.append((up > 0).transpose(0, 1).numpy())  # (t, Q, H, W)
    return FrameOutputs(np.concatenate(probs), np.concatenate(masks))


def _segmenter_bounds(model, videos, gt, mode: str) -> tuple[dict, int]:
    import numpy as np

    from dvis.evaluation.oracle import oracle_tracks, per_frame_split
    from dvis.evaluation.ytvis import evaluate_tracks

    outputs, frames = {}, 0
    for video in videos:
        outputs[video.video_id] = segmenter_outputs(model, np.stack(list(video.frames())))
        frames += video.length
    if mode == "oracle":
        tracks = [t for video_id, out in outputs.items() for t in oracle_tracks(out, gt, video_id)]
        return evaluate_tracks(gt, tracks), frames
    frame_gt, dets = per_frame_split(gt, outputs)
    return evaluate_tracks(frame_gt, dets), frames


# ------------------------------------------------------------------------------------ report
def load_eval(plan: Plan, name: str, seed: int | None, label: str) -> dict | None:
    path = plan.eval_file(name, seed, label)
    return json.loads(path.read_text()) if path.is_file() else None


SEGMENTER_ONLY = ("minvis", "oracle", "per-frame")  # evaluations of the shared segmenter (no seed)


def per_seed(plan: Plan, name: str, label: str) -> list[dict]:
    if name in SEGMENTER_ONLY:
        one = load_eval(plan, name, None, label)
        return [one] if one else []
    return [r for r in (load_eval(plan, name, s, label) for s in plan.seeds) if r is not None]


def cell(results: list[dict], key: str) -> str:
    values = [100 * r[key] for r in results if r.get(key) is not None and r[key] >= 0]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(plan: Plan, rows: list[tuple[str, str, str]], title: str) -> list[str]:
    """rows: (row label, variant name, eval label)."""
    lines = [f"### {title}", "", "| " + " | ".join(["variant", "seeds", *METRICS]) + " |",
             "|" + "---|" * (len(METRICS) + 2)]
    for row_label, name, label in rows:
        results = per_seed(plan, name, label)
        lines.append("| " + " | ".join([row_label, str(len(results)), *(cell(results, k) for k in METRICS)]) + " |")
    return lines + [""]


def mean_of(plan: Plan, name: str, label: str, key: str = "AP") -> float | None:
    values = [r[key] for r in per_seed(plan, name, label) if r.get(key) is not None and r[key] >= 0]
    return 100 * statistics.mean(values) if values else None


def paired(plan: Plan, a: tuple[str, str], b: tuple[str, str], key: str = "AP") -> tuple[float, int, int] | None:
    """Mean over seeds of (a - b) in AP points, and in how many seeds a > b."""
    diffs = []
    for seed in plan.seeds:
        ra = load_eval(plan, a[0], None if a[0] in SEGMENTER_ONLY else seed, a[1])
        rb = load_eval(plan, b[0], None if b[0] in SEGMENTER_ONLY else seed, b[1])
        if ra and rb and ra.get(key) is not None and rb.get(key) is not None:
            diffs.append(100 * (ra[key] - rb[key]))
    if not diffs:
        return None
    return statistics.mean(diffs), sum(d > 0 for d in diffs), len(diffs)


def claim(plan: Plan, text: str, better: tuple[str, str], worse: tuple[str, str], key: str = "AP") -> str:
    result = paired(plan, better, worse, key)
    if result is None:
        return f"- {text}: not measured yet."
    diff, wins, n = result
    if n < len(plan.seeds):  # a row still being measured: no verdict from part of its seeds
        return (f"- {text}: **not settled** ({n} of {len(plan.seeds)} seeds measured so far; {key} {diff:+.1f} "
                f"points on average, better in {wins} of {n}).")
    verdict = "holds" if wins == n and diff > 0 else ("does not hold" if wins == 0 else "mixed")
    return f"- {text}: **{verdict}** ({key} {diff:+.1f} points on average; better in {wins} of {n} seeds)."


def report(plan: Plan, meta: dict) -> str:
    components = [("segmenter, per frame (every frame a one-frame video)", "per-frame", "per-frame"),
                  ("MinVIS (segmenter + Hungarian matching)", "minvis", "minvis"),
                  ("+ referring tracker (online)", "dvis", "online"),
                  ("+ tracker + temporal refiner (offline)", "refiner", "offline"),
                  ("oracle association of the segmenter's masks (bound)", "oracle", "oracle")]
    initial = [("zero", "init-zero", "online"), ("previous tracker output", "init-previous", "online"),
               ("unmatched segmenter queries", "init-unmatched", "online"),
               ("matched segmenter queries (DVIS)", "dvis", "online")]
    attention = [("standard cross-attention", "standard-ca", "online"),
                 ("referring cross-attention (DVIS)", "dvis", "online")]
    refiner = [("tracker only (online)", "dvis", "online")] + [
        (v.label, v.name, "offline") for v in (*REFINERS[1:], REFINERS[0])]
    semi = [(f"{n} frame{'s' if n > 1 else ''}", "refiner", f"clip{n}") for n in SEMI_ONLINE_CLIPS] + [("full video (offline)", "refiner",
                                                                                    "offline")]
    matching = [('"paper" (Eq. 1)', "dvis", "online"), ('"dvis-release"', "release-matching", "online")]
    denoising = [("MinVIS", "minvis", "minvis"), ("DVIS's recipe", "dvis", "online"),
                 ("+ DVIS++'s hard denoising (match_noise 0.5)", "match-noise", "online"),
                 ("... + temporal refiner (offline)", "match-noise-refiner", "offline"),
                 ("... trained 6000 iterations instead of 4000 (the shipped recipe)", "match-noise-long", "online")]
    trials = [("MinVIS", "minvis", "minvis"),
              ("match_noise 0.5, 4000 iterations, online", "match-noise", "online"),
              ("match_noise 0.8, 4000 iterations, online", "match-noise-0.8", "online"),
              ("match_noise 0.5, 6000 iterations, online", "match-noise-long", "online"),
              ("match_noise 0.5, 4000 iterations, offline", "match-noise-refiner", "offline"),
              ("match_noise 0.8, 4000 iterations, offline", "match-noise-0.8-refiner", "offline"),
              ("match_noise 0.5, 6000 iterations, offline", "match-noise-long-refiner", "offline"),
              ("match_noise 0.5, 6000 iterations, refiner 2500 iterations, offline", "match-noise-long-refiner-2500",
               "offline")]
    lines = ["<!-- generated by benchmarks/ablations.py report; edit the discussion in benchmarks/ablations_notes.md -->",
             "# Reproducing the paper's claims on the synthetic occlusion benchmark", ""]
    lines += describe(plan)
    lines += ["## Claims", ""]
    lines += [
        claim(plan, "the referring tracker beats MinVIS matching (Table 5)", ("dvis", "online"), ("minvis", "minvis")),
        claim(plan, "... on heavily occluded objects", ("dvis", "online"), ("minvis", "minvis"), "AP_heavy"),
        claim(plan, "the refiner adds more (Table 5)", ("refiner", "offline"), ("dvis", "online")),
        claim(plan, "... on heavily occluded objects", ("refiner", "offline"), ("dvis", "online"), "AP_heavy"),
        claim(plan, "referring cross-attention beats standard cross-attention (Table 7)", ("dvis", "online"),
              ("standard-ca", "online")),
        *(claim(plan, f"matched queries beat {label} as initial value (Table 6)", ("dvis", "online"), (name, lab))
          for label, name, lab in initial[:3]),
        *(claim(plan, f"the full refiner beats the refiner {v.label} (Table 8)", ("refiner", "offline"),
                (v.name, "offline")) for v in REFINERS[1:]),
        claim(plan, "offline beats semi-online with 20-frame clips (Table II)", ("refiner", "offline"),
              ("refiner", "clip20")),
        claim(plan, "semi-online with 20-frame clips beats 1-frame clips (Table II)", ("refiner", "clip20"),
              ("refiner", "clip1")),
        claim(plan, '"paper" matching vs "dvis-release" matching', ("dvis", "online"), ("release-matching", "online")),
        claim(plan, "training with hard denoising beats DVIS's recipe (not a claim of DVIS; DVIS++)",
              ("match-noise", "online"), ("dvis", "online")),
        claim(plan, "... on heavily occluded objects", ("match-noise", "online"), ("dvis", "online"), "AP_heavy"),
        claim(plan, "with hard denoising, the refiner adds more", ("match-noise-refiner", "offline"),
              ("match-noise", "online")),
        claim(plan, "hard denoising trained 6000 iterations beats 4000", ("match-noise-long", "online"),
              ("match-noise", "online")),
        claim(plan, "hard denoising trained 6000 iterations beats MinVIS", ("match-noise-long", "online"),
              ("minvis", "minvis")),
        "",
        "## Tables", "",
        "AP and AR in percent on the held-out split; mean ± standard deviation over the seeds (MinVIS has",
        "no trained part, so one number). `n/a`: no ground-truth object of that occlusion level.", "",
    ]
    lines += table(plan, components, "Table 5: components")
    lines += table(plan, initial, "Table 6: initial value of the referring cross-attention (online)")
    lines += table(plan, attention, "Table 7: referring vs standard cross-attention (online)")
    lines += table(plan, refiner, "Table 8: refiner components (offline)")
    lines += table(plan, semi, "Table II: semi-online clip length")
    lines += table(plan, matching, "Matching convention (online)")
    lines += table(plan, denoising, "Tracker training: DVIS++'s hard denoising (online)")
    lines += table(replace(plan, seeds=plan.seeds[:1]), trials,
                   f"Recipe trials for the shipped model (issue 13.5; seed {plan.seeds[0]} only)")
    notes = ROOT / "benchmarks" / "ablations_notes.md"
    if notes.is_file():
        lines += [notes.read_text().rstrip(), ""]
    lines += timing_section(meta)
    figures = ROOT / "benchmarks" / "results" / "figures.md"  # the Figures section, by benchmarks/figures.py
    if figures.is_file():
        lines += ["", figures.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def describe(plan: Plan) -> list[str]:
    from dvis.data.ytvis import load_json

    data = load_json(plan.heldout / "annotations.json")
    levels: dict[str, int] = {}
    for ann in data["annotations"]:
        levels[ann.get("occlusion_level", "?")] = levels.get(ann.get("occlusion_level", "?"), 0) + 1
    frames = sorted({len(v["file_names"]) for v in data["videos"]})
    seeds = ", ".join(str(s) for s in plan.seeds)
    return [
        "## Set-up", "",
        (f"- Held-out split: {len(data['videos'])} videos of {'/'.join(map(str, frames))} frames, 128 x 128, "
         f"heavy occlusion, generation seed {HELDOUT_SEED} (training used seed 0, 24-frame videos); "
         f"{len(data['annotations'])} objects: "
         + ", ".join(f"{levels.get(k, 0)} {k}" for k in ("light", "medium", "heavy")) + "."),
        ("- One segmenter for every variant: the synthetic demo segmenter (`configs/synthetic/segmenter.yaml`), "
         "frozen; its outputs on the training set are cached once and shared by all runs."),
        (f"- Trackers and refiners: `configs/synthetic/tracker.yaml` / `refiner.yaml`, seeds {seeds}; each refiner "
         "trains on the \"dvis\" tracker of its seed. A seed sets the initialisation, the clip order and the "
         "sampled points."),
        ("- Evaluation: `dvis.evaluation.ytvis` (the public YouTube-VIS protocol) on the results of "
         "`VideoPredictor` (the `dvis segment` path), 10 detections per video."), "",
    ]


def timing_section(meta: dict) -> list[str]:
    walls = meta.get("walls", {})
    evals = [v for k, v in walls.items() if k.startswith("eval/")]
    by_stage: dict[str, list[float]] = {}
    for key, seconds in walls.items():
        if key.startswith("train/"):
            stage = BY_NAME[key.split("/")[1]].stage if key.split("/")[1] in BY_NAME else "refiner"
            by_stage.setdefault(stage, []).append(seconds)
    commands = ["dvis train segmenter --config configs/synthetic/segmenter.yaml",
                meta.get("command", "python benchmarks/ablations.py run")]
    lines = ["## Commands and time", "", "    " + "\n    ".join(commands), ""]
    if walls:
        lines.append(f"Wall time on 2 CPU cores, {meta.get('jobs', 2)} one-thread jobs at a time: "
                     + ", ".join(f"{stage} runs {statistics.mean(v) / 60:.1f} min each ({len(v)} runs)"
                                 for stage, v in sorted(by_stage.items()))
                     + (f", evaluations {statistics.mean(evals):.0f} s each ({len(evals)})" if evals else "")
                     + f"; {sum(walls.values()) / 3600:.1f} h of job time, "
                       f"{meta.get('total', 0) / 3600:.1f} h wall in total.")
    lines += ["", "Per-variant overrides of the synthetic configs:", ""]
    lines += [f"- `{v.name}` ({v.stage}): {' '.join(f'`{o}`' for o in v.overrides) or 'none'}"
              for v in VARIANTS]
    return lines + [""]


# ------------------------------------------------------------------------------- demo model
DEMO_DIR = ROOT / "src" / "dvis" / "models" / "synthetic-demo"


def install_demo(plan: Plan, segmenter_minutes: float, target: Path = DEMO_DIR, chain: str = "dvis",
                 confirm_videos: int = 0, refiner: str | None = None) -> Path:
    """Copy seed 0's offline model of one chain (``chain``: a tracker variant with a full refiner
    trained on it: "dvis", i.e. the plain configs/synthetic/*.yaml recipe, or the tracker of a chain refiner) into the
    package with classes.json and a model card. ``confirm_videos`` > 0: also evaluate the three modes
    on a fresh split (seed :data:`CONFIRM_SEED`, used for nothing else) and report it in the card, since
    the chain may have been chosen after seeing the held-out split's numbers."""
    import shutil

    from dvis.data.synthetic import THING_CATEGORIES
    from dvis.evaluation.writers import atomic_write_json

    seed = plan.seeds[0]
    tracker = BY_NAME[chain]
    refiner = BY_NAME[refiner] if refiner else next(v for v in (*REFINERS[:1], *CHAIN_REFINERS) if v.tracker == chain)
    if refiner.stage != "refiner" or refiner.tracker != chain:
        raise SystemExit(f"{refiner.name} is not a refiner trained on the {chain} tracker")
    source = plan.model_dir(refiner, seed)
    results = {label: load_eval(plan, name, None if name == "minvis" else seed, label)
               for name, label in (("minvis", "minvis"), (tracker.name, "online"), (refiner.name, "offline"))}
    if not (source / "config.yaml").is_file() or any(r is None for r in results.values()):
        raise SystemExit(f"seed {seed}'s {chain} chain is not trained and evaluated yet (run `run` first)")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "model.safetensors"):
        shutil.copyfile(source / name, target / name)
    shutil.copyfile(source / "training.yaml", target / "training_refiner.yaml")
    shutil.copyfile(plan.model_dir(tracker, seed) / "training.yaml", target / "training_tracker.yaml")
    shutil.copyfile(plan.segmenter / "training.yaml", target / "training_segmenter.yaml")
    atomic_write_json(target / "classes.json", [{"id": c["id"], "name": c["name"]} for c in THING_CATEGORIES])
    walls = load_meta(plan).get("walls", {})
    minutes = {"segmenter": segmenter_minutes,
               "tracker": walls.get(f"train/{tracker.name}/{seed}", float("nan")) / 60,
               "refiner": walls.get(f"train/{refiner.name}/{seed}", float("nan")) / 60}
    import yaml

    stages = {stage: yaml.safe_load((target / f"training_{stage}.yaml").read_text())
              for stage in ("segmenter", "tracker", "refiner")}
    size = (target / "model.safetensors").stat().st_size
    confirm = confirm_split(plan, tracker, refiner, confirm_videos) if confirm_videos else None
    (target / "README.md").write_text(model_card(plan, results, minutes, size, stages, tracker.overrides, confirm,
                                                      refiner.overrides))
    return target


def _data_line(config: dict) -> str:
    data, synth = config["data"], config["data"]["synthetic"]
    augmentation = data.get("augmentation")
    aug = (f"random short side {min(augmentation['short_sides'])}-{max(augmentation['short_sides'])} and flips"
           if augmentation else "no augmentation")
    return f"{synth['videos']} videos x {synth['frames']} frames, generation seed {synth['seed']}, {aug}"


def _validation_line(tracker: dict, refiner: dict) -> str:
    validation = tracker.get("validation") or {}
    synth = validation.get("synthetic")
    if not validation.get("annotations") or synth is None:
        return "none"
    refiner_period = (refiner.get("validation") or {}).get("period", "?")
    return (f"{synth['videos']} videos x {synth['frames']} frames, generation seed {synth['seed']}, scored every "
            f"{validation['period']} (tracker) and {refiner_period} (refiner) iterations")


def confirm_split(plan: Plan, tracker: Variant, refiner: Variant, videos: int) -> dict[str, dict]:
    """MinVIS / online / offline metrics of seed 0's chain on a fresh split (generated once under
    ``--work``, evaluations kept in the results folder as ``confirm-*.json``)."""
    from dvis.data.synthetic import generate
    from dvis.data.ytvis import load_json

    split = plan.work / "confirm"
    if not (split / "annotations.json").is_file():
        generate(split, videos=videos, frames=64, seed=CONFIRM_SEED, height=128, width=128, objects=(2, 6),
                 occlusion="heavy")
    seed = plan.seeds[0]
    results: dict = {"videos": len(load_json(split / "annotations.json")["videos"])}
    for mode, name, model in (("minvis", "minvis", plan.segmenter),
                              ("online", tracker.name, plan.model_dir(tracker, seed)),
                              ("offline", refiner.name, plan.model_dir(refiner, seed))):
        out = plan.results_dir / f"confirm-{name}-{mode}.json"
        results[mode] = json.loads(out.read_text()) if out.is_file() else \
            evaluate(str(model), mode, 0, str(split / "annotations.json"), str(out))
    return results


def _metric_table(results: dict[str, dict]) -> list[str]:
    rows = [("MinVIS (segmenter only)", "minvis"), ("online DVIS (tracker)", "online"),
            ("offline DVIS (tracker + refiner)", "offline")]
    table = ["| mode | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for label, key in rows:
        r = results[key]
        table.append(f"| {label} | " + " | ".join("n/a" if r[k] is None or r[k] < 0 else f"{100 * r[k]:.1f}"
                                                    for k in METRICS) + " |")
    return table


def model_card(plan: Plan, results: dict[str, dict], minutes: dict[str, float], size: int,
               stages: dict[str, dict], tracker_overrides: tuple[str, ...] = (),
               confirm: dict[str, dict] | None = None, refiner_overrides: tuple[str, ...] = ()) -> str:
    """The shipped model's README: data, configs, training time, held-out metrics."""
    table = _metric_table(results)
    confirmation = [] if confirm is None else [
        f"On a second split generated for this check only ({confirm['videos']} videos x 64 "
        f"frames, heavy occlusion, seed {CONFIRM_SEED}; the tracker variant was chosen after seeing the numbers "
        "above, so these are the unbiased ones):", "", *_metric_table(confirm), ""]
    return "\n".join([
        "# synthetic-demo: DVIS trained on the synthetic occlusion benchmark", "",
        "A complete offline DVIS model (segmenter, referring tracker, temporal refiner) small enough to",
        "train on a CPU, shipped so that `make demo` and `--model synthetic-demo` work on a fresh machine.",
        "It knows only the benchmark's 6 shape classes (`classes.json`); it is a demonstration, not a",
        "model for real footage.", "",
        "## Data", "",
        "`dvis.data.synthetic` (docs/data.md), 128 x 128, heavy occlusion, 2-6 objects per video:",
        f"- segmenter: {_data_line(stages['segmenter'])};",
        f"- tracker and refiner: {_data_line(stages['tracker'])} (segmenter outputs cached);",
        f"- validation (checkpoint selection only): {_validation_line(stages['tracker'], stages['refiner'])};",
        f"- held-out (the numbers below): {len(_videos(plan))} videos x 64 frames, generation seed {HELDOUT_SEED}, "
        "never used in training or selection.", "",
        "## Training", "",
        "    dvis train segmenter --config configs/synthetic/segmenter.yaml",
        "    dvis train tracker   --config configs/synthetic/tracker.yaml" + "".join(f" {shlex.quote(o)}" for o in tracker_overrides),
        "    dvis train refiner   --config configs/synthetic/refiner.yaml" + "".join(f" {shlex.quote(o)}" for o in refiner_overrides),
        "",
        "(the files here were produced by `benchmarks/ablations.py run` / `install-demo`, whose seed-0",
        "tracker and full refiner are exactly these commands with `seed=0`; the full training",
        "configs are `training_*.yaml`). Wall time on the 2-core CPU machine, while other jobs shared it:",
        ", ".join(f"{stage} {minutes[stage]:.0f} min ({stages[stage]['solver']['max_iter']} iterations)"
                  for stage in ("segmenter", "tracker", "refiner")) + ".", "",
        "Exported iterations (best validation AP): "
        + ", ".join(f"{stage} {stages[stage].get('selected_iteration', stages[stage]['solver']['max_iter'])}"
                    for stage in ("tracker", "refiner")) + ".", "",
        f"Weights: {size / 2**20:.1f} MB float32 safetensors (`model.safetensors`), config in `config.yaml`.", "",
        "## Metrics", "",
        f"YouTube-VIS AP/AR (percent) on the held-out split of docs/results.md ({len(_videos(plan))} videos of",
        "64 frames, heavy occlusion, seed 1000), 10 detections per video:", "",
        *table, "",
        *confirmation,
        "The same recipe over several training seeds, and the ablations: docs/results.md.", "",
    ])


def _videos(plan: Plan) -> list:
    from dvis.data.ytvis import load_json

    return load_json(plan.heldout / "annotations.json")["videos"]


# -------------------------------------------------------------------------------------- main
HELDOUT_SEED = 1000
CONFIRM_SEED = 3000  # install-demo's confirmation split
RESULTS = ROOT / "benchmarks" / "results" / "ablations"


def make_plan(args) -> Plan:
    work = Path(args.work).resolve()
    variants = getattr(args, "variants", None)
    known = set(BY_NAME)
    if variants and set(variants) - known:
        raise SystemExit(f"unknown variant(s) {sorted(set(variants) - known)}; known: {sorted(known)}")
    for name in variants or ():
        base = BY_NAME[name].tracker
        if BY_NAME[name].stage == "refiner" and base not in variants:
            raise SystemExit(f"the refiner variant {name} trains on the {base!r} tracker: add {base} to --variants")
    segmenter = Path(args.segmenter).resolve()
    if args.command == "run" and (segmenter / "config.yaml").is_file():
        segmenter = segmenter_folder(segmenter, work)
    return Plan(work, segmenter, work / "heldout", list(args.seeds),
                tuple(getattr(args, "override", None) or ()), frozenset(variants) if variants else None,
                Path(args.results).resolve())


def segmenter_folder(model_dir: Path, work: Path) -> Path:
    """``model_dir`` if it is a segmenter-stage folder; for a complete model (such as the shipped
    ``synthetic-demo``) a segmenter-only copy under ``work``, so that a later session reuses the
    shipped segmenter instead of training it again (a tracker stage initialised from a complete
    model would start from its trained tracker)."""
    import dataclasses
    import shutil

    from dvis.modeling.dvis import DVIS
    from dvis.modeling.io import load_config, load_pretrained, save_pretrained

    config = load_config(model_dir / "config.yaml")
    if config.tracker is None and config.refiner is None:
        return model_dir
    target = work / "segmenter"
    if not (target / "config.yaml").is_file():
        full = load_pretrained(model_dir)
        config = dataclasses.replace(config, tracker=None, refiner=None,
                                     inference=dataclasses.replace(config.inference, mode="minvis"))
        alone = DVIS(config)
        alone.segmenter.load_state_dict(full.segmenter.state_dict())
        card = model_dir / "training_segmenter.yaml"
        if card.is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(card, target / "training.yaml")
        save_pretrained(alone, target)
    return target


def store_tracker(plan: Plan, seed: int, name: str = "dvis") -> Path:
    """Keep a "dvis" tracker in the repository (its weights alone, ~1.6 MB, with its config and
    training card), so that a later session trains the refiners of that seed without training the
    tracker again (the model folders under --work do not survive a session)."""
    import shutil

    from safetensors.torch import save_file

    from dvis.modeling.io import load_pretrained

    source = plan.model_dir(BY_NAME[name], seed)
    target = plan.results_dir / "trackers" / f"{name}-seed{seed}"
    target.mkdir(parents=True, exist_ok=True)
    tracker = load_pretrained(source).tracker
    save_file({k: v.contiguous() for k, v in tracker.state_dict().items()}, str(target / "tracker.safetensors"))
    for name in ("config.yaml", "training.yaml"):
        shutil.copyfile(source / name, target / name)
    return target


def restore_trackers(plan: Plan) -> list[tuple[str, int]]:
    """Rebuild the model folder of every stored tracker whose folder is missing (shared segmenter
    + stored tracker weights); returns the (variant, seed) pairs restored."""
    import shutil

    from safetensors.torch import load_file

    from dvis.modeling.dvis import DVIS
    from dvis.modeling.io import load_config, load_pretrained, save_pretrained

    restored, segmenter = [], None
    for name, seed in ((name, seed) for name in BASE_TRACKERS for seed in plan.seeds):
        stored = plan.results_dir / "trackers" / f"{name}-seed{seed}"
        target = plan.model_dir(BY_NAME[name], seed)
        if not (stored / "tracker.safetensors").is_file() or (target / "config.yaml").is_file():
            continue
        segmenter = segmenter or load_pretrained(plan.segmenter).segmenter.state_dict()
        model = DVIS(load_config(stored / "config.yaml"))
        model.segmenter.load_state_dict(segmenter)
        model.tracker.load_state_dict(load_file(str(stored / "tracker.safetensors")))
        save_pretrained(model, target)
        shutil.copyfile(stored / "training.yaml", target / "training.yaml")
        restored.append((name, seed))
    if restored:
        print(f"restored the stored trackers {restored} (not retrained)", flush=True)
    return restored


def ensure_heldout(plan: Plan, videos: int, frames: int) -> None:
    from dvis.data.synthetic import generate

    if not (plan.heldout / "annotations.json").is_file():
        generate(plan.heldout, videos=videos, frames=frames, seed=HELDOUT_SEED, height=128, width=128,
                 objects=(2, 6), occlusion="heavy")


def prime_cache(plan: Plan) -> None:
    """Build the shared segmenter cache once, before parallel runs would each build it."""
    from dvis.training.config import load_train_config
    from dvis.training.loop import Trainer

    overrides = [f"init.model={plan.segmenter}", f"output_dir={plan.work / 'prime'}",
                 f"cache.dir={plan.work / 'segmenter_cache'}", *plan.overrides]
    Trainer(load_train_config(CONFIGS / "tracker.yaml", overrides), "tracker", device="cpu", progress=False)


def load_meta(plan: Plan) -> dict:
    """``meta.json``: the run command, wall time per job (s), total wall time, parallel jobs."""
    path = plan.results_dir / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "report", "install-demo"):
        p = sub.add_parser(name)
        p.add_argument("--work", default=str(ROOT / "runs" / "ablations"))
        p.add_argument("--segmenter", default=str(ROOT / "runs" / "synthetic" / "segmenter" / "model"))
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument("--output", default=str(ROOT / "docs" / "results.md"))
        p.add_argument("--results", default=str(RESULTS),
                       help="evaluation JSONs and meta.json (kept in the repository; the models stay under --work)")
    run_parser = sub.choices["run"]
    run_parser.add_argument("--jobs", type=int, default=2)
    run_parser.add_argument("--videos", type=int, default=30, help="held-out videos")
    run_parser.add_argument("--frames", type=int, default=64, help="frames per held-out video (>= 60)")
    run_parser.add_argument("--variants", nargs="+", help="train and evaluate only these (default: all)")
    run_parser.add_argument("--budget-minutes", type=float,
                            help="start no job after this many minutes (running ones finish; rerun to continue)")
    run_parser.add_argument("--override", action="append", metavar="KEY=VALUE",
                            help="a training-config override for every run (e.g. solver.max_iter=10)")
    chains = ["dvis", *(v.tracker for v in CHAIN_REFINERS)]
    sub.choices["install-demo"].add_argument("--chain", default="dvis", choices=chains,
                                             help="which tracker (with its full refiner) to ship")
    sub.choices["install-demo"].add_argument("--refiner", help="the chain's refiner variant (default: its first)")
    sub.choices["install-demo"].add_argument("--confirm-videos", type=int, default=0,
                                             help="also evaluate on a fresh split of this many videos (seed 3000)")
    sub.choices["install-demo"].add_argument("--segmenter-minutes", type=float, required=True,
                                             help="wall time of the segmenter stage (for the model card)")
    ev = sub.add_parser("evaluate", help="(internal) evaluate one model in one mode")
    for name in ("--model", "--mode", "--annotations", "--out"):
        ev.add_argument(name, required=True)
    ev.add_argument("--clip-len", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "evaluate":
        evaluate(args.model, args.mode, args.clip_len, args.annotations, args.out)
        return 0
    plan = make_plan(args)
    if args.command == "install-demo":
        target = install_demo(plan, args.segmenter_minutes, chain=args.chain, confirm_videos=args.confirm_videos,
                              refiner=args.refiner)
        print(f"installed {target}")
        return 0
    meta = load_meta(plan)
    if args.command == "run":
        if not (plan.segmenter / "config.yaml").is_file():
            raise SystemExit(f"no trained segmenter at {plan.segmenter}: run `dvis train segmenter --config "
                             "configs/synthetic/segmenter.yaml` first")
        from dvis.evaluation.writers import atomic_write_json

        started = time.perf_counter()
        extra = "".join(f" --override {o}" for o in plan.overrides)
        if plan.variants:
            extra += f" --variants {' '.join(sorted(plan.variants))}"
        total_before = meta.get("total", 0.0)
        meta = {"command": f"python benchmarks/ablations.py run --seeds {' '.join(map(str, plan.seeds))} "
                           f"--jobs {args.jobs} --videos {args.videos} --frames {args.frames}{extra}",
                "walls": dict(meta.get("walls", {})), "jobs": args.jobs, "total": total_before}

        def record(key: str | None = None, seconds: float = 0.0) -> None:  # after every job: a kill loses nothing
            if key is not None:
                meta["walls"][key] = seconds
                _, name, seed = key.split("/") if key.startswith("train/") else ("", "", "")
                if name in BASE_TRACKERS:
                    store_tracker(plan, int(seed), name)
            meta["total"] = total_before + time.perf_counter() - started
            atomic_write_json(plan.results_dir / "meta.json", meta)

        ensure_heldout(plan, args.videos, args.frames)
        restore_trackers(plan)
        prime_cache(plan)
        budget = None if args.budget_minutes is None else 60 * args.budget_minutes - (time.perf_counter() - started)
        run_jobs(build_jobs(plan), args.jobs, plan.work / "logs", budget, record)
        record()
    text = report(plan, meta)
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
