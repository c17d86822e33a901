"""Oracle association and per-frame AP (dvis.evaluation.oracle) on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from dvis.data.masks import decode
from dvis.data.synthetic import generate
from dvis.evaluation.oracle import FrameOutputs, oracle_tracks, per_frame_split
from dvis.evaluation.ytvis import evaluate_tracks
from dvis.evaluation.ytvis_data import load_ground_truth


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    annotations = generate(tmp_path_factory.mktemp("oracle") / "set", videos=2, frames=5, seed=8, height=48,
                           width=64, objects=(2, 3), occlusion="heavy")
    return load_ground_truth(annotations)


def perfect_outputs(gt, video_id, queries: int = 6, shuffle: int = 0) -> FrameOutputs:
    """Per frame, the ground-truth masks in some query slots (a different order every frame)."""
    video = gt.videos[video_id]
    tracks = [t for t in gt.tracks if t.video_id == video_id]
    probs = np.full((video.length, queries, len(gt.categories)), 0.01, np.float32)
    masks = np.zeros((video.length, queries, video.height, video.width), bool)
    rng = np.random.default_rng(shuffle)
    for frame in range(video.length):
        slots = rng.permutation(queries)[: len(tracks)]
        for slot, track in zip(slots, tracks):
            mask = decode(track.rles[frame], video.height, video.width) if track.rles[frame] else None
            if mask is not None:
                masks[frame, slot] = mask
            probs[frame, slot, gt.category_ids.index(track.category_id)] = 0.9
    return FrameOutputs(probs, masks)


def test_oracle_association_of_perfect_masks_in_shuffled_slots_is_perfect(ground_truth):
    dets = []
    for index, video_id in enumerate(ground_truth.videos):
        dets += oracle_tracks(perfect_outputs(ground_truth, video_id, shuffle=index), ground_truth, video_id)
    assert len(dets) == len(ground_truth.tracks)
    assert evaluate_tracks(ground_truth, dets)["AP"] == pytest.approx(1.0)


def test_oracle_of_empty_masks_scores_zero(ground_truth):
    dets = []
    for video_id, video in ground_truth.videos.items():
        empty = FrameOutputs(np.full((video.length, 4, len(ground_truth.categories)), 0.5, np.float32),
                             np.zeros((video.length, 4, video.height, video.width), bool))
        dets += oracle_tracks(empty, ground_truth, video_id)
    assert evaluate_tracks(ground_truth, dets)["AP"] == pytest.approx(0.0)


def test_per_frame_split_of_perfect_masks_is_perfect_and_one_video_per_frame(ground_truth):
    outputs = {video_id: perfect_outputs(ground_truth, video_id, shuffle=3) for video_id in ground_truth.videos}
    frame_gt, dets = per_frame_split(ground_truth, outputs, top_k=10)
    assert len(frame_gt.videos) == sum(v.length for v in ground_truth.videos.values())
    assert all(v.length == 1 for v in frame_gt.videos.values())
    assert evaluate_tracks(frame_gt, dets)["AP"] == pytest.approx(1.0)
