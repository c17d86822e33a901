"""Speed of `dvis eval` on an OVIS-sized synthetic set (140 videos, 60 frames, 360x640, 20 results/video).

Builds everything in memory (moving elliptical blobs, RLE-encoded with pycocotools), then times
loading (parse) and evaluation separately. Target: under a minute on 2 cores.
Run: .venv/bin/python benchmarks/eval_speed.py [--videos 140 --frames 60 --preds 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from dvis.evaluation.rle import encode_masks
from dvis.evaluation.ytvis import evaluate_tracks
from dvis.evaluation.ytvis_data import parse_ground_truth, parse_results

H, W, CATEGORIES = 360, 640, 25


def blob_track(rng: np.random.Generator, frames: int) -> np.ndarray:
    """(T, H, W) bool: an ellipse drifting across the frame, absent on a random stretch."""
    cy, cx = rng.uniform(60, H - 60), rng.uniform(60, W - 60)
    vy, vx = rng.normal(0, 1.5, 2)
    ry, rx = rng.uniform(15, 60, 2)
    masks = np.zeros((frames, H, W), dtype=bool)
    gone = rng.integers(0, frames, 2)
    for t in range(frames):
        if min(gone) <= t < max(gone) and rng.random() < 0.5:
            continue
        y, x = cy + vy * t, cx + vx * t
        y0, y1 = max(int(y - ry), 0), min(int(y + ry) + 2, H)
        x0, x1 = max(int(x - rx), 0), min(int(x + rx) + 2, W)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        masks[t, y0:y1, x0:x1] = ((yy - y) / ry) ** 2 + ((xx - x) / rx) ** 2 <= 1.0
    return masks


def jitter(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    shift = rng.integers(-6, 7, 2)
    return np.roll(masks, tuple(shift), axis=(1, 2))


def synthesise(videos: int, frames: int, preds: int, seed: int = 0) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    gt = {"videos": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(1, CATEGORIES + 1)]}
    results = []
    for v in range(1, videos + 1):
        gt["videos"].append({"id": v, "height": H, "width": W, "length": frames})
        objects = []
        for _ in range(int(rng.integers(3, 8))):
            masks = blob_track(rng, frames)
            cat = int(rng.integers(1, CATEGORIES + 1))
            rles = encode_masks(masks)
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "video_id": v, "category_id": cat, "iscrowd": 0,
                "segmentations": [r if m.any() else None for r, m in zip(rles, masks)],
                "areas": [int(m.sum()) or None for m in masks],
                "occlusion": float(rng.uniform(0, 1))})
            objects.append((masks, cat))
        for p in range(preds):
            if p < len(objects):
                masks, cat = objects[p]
                masks = jitter(rng, masks)
            else:
                masks, cat = blob_track(rng, frames), int(rng.integers(1, CATEGORIES + 1))
            results.append({"video_id": v, "category_id": cat, "score": float(rng.random()),
                            "segmentations": encode_masks(masks)})
    return gt, results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=140)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--preds", type=int, default=20)
    args = parser.parse_args()
    t0 = time.perf_counter()
    gt_json, results_json = synthesise(args.videos, args.frames, args.preds)
    t1 = time.perf_counter()
    gt_json = json.loads(json.dumps(gt_json))  # what reading the two files costs
    results_json = json.loads(json.dumps(results_json))
    t1b = time.perf_counter()
    gt = parse_ground_truth(gt_json)
    dets = parse_results(results_json, gt)
    t2 = time.perf_counter()
    result = evaluate_tracks(gt, dets)
    t3 = time.perf_counter()
    print(f"set: {args.videos} videos x {args.frames} frames, {H}x{W}, {args.preds} results/video, "
          f"{len(gt.tracks)} objects, {len(dets)} results")
    print(f"{'stage':<28}{'seconds':>10}")
    print(f"{'synthesise (not timed)':<28}{t1 - t0:>10.2f}")
    print(f"{'JSON dump + load':<28}{t1b - t1:>10.2f}")
    print(f"{'parse gt + results':<28}{t2 - t1b:>10.2f}")
    print(f"{'evaluate (AP/AR + occl.)':<28}{t3 - t2:>10.2f}")
    print(f"{'total (JSON + parse + eval)':<28}{t3 - t1:>10.2f}")
    print(f"AP {result['AP']:.4f}  AP50 {result['AP50']:.4f}  AP_light {result['AP_light']}  "
          f"AP_heavy {result['AP_heavy']}")


if __name__ == "__main__":
    main()
