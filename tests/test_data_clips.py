"""Training clips: frame sampling, per-clip augmentation, id/mask consistency, determinism,
worker processes, COCO pseudo videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dvis.data import masks as mask_codec
from dvis.data.augment import ClipAugmentation, RotationSchedule
from dvis.data.clips import ClipDataset, PseudoVideoClipDataset, collate_clips, sample_frame_indices
from dvis.data.coco import CocoImages
from dvis.data.synthetic import generate, render_video
from dvis.data.ytvis import YTVISDataset

SMALL_AUG = ClipAugmentation(short_sides=(40, 48), max_size=96, crop=(30, 44), crop_resize=(48, 56))


@pytest.fixture(scope="module")
def ytvis(tmp_path_factory) -> YTVISDataset:
    root = tmp_path_factory.mktemp("clips") / "set"
    ann = generate(root, videos=3, frames=10, seed=2, height=40, width=56, objects=(2, 4))
    return YTVISDataset(ann, root / "JPEGImages")


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def test_window_sampling_follows_the_release():
    rng = np.random.default_rng(0)
    for _ in range(200):
        length = int(rng.integers(1, 30))
        contiguous = sample_frame_indices(length, 5, 2, rng)  # 2 * 2 + 1 == 5: contiguous window
        if length >= 5:
            assert contiguous == list(range(contiguous[0], contiguous[0] + 5))
        else:
            assert sorted(contiguous) == contiguous and set(contiguous) == set(range(length))
        spread = sample_frame_indices(length, 4, 3, rng)
        assert len(spread) == 4 and spread == sorted(spread)
        assert max(spread) - min(spread) <= 6 and all(0 <= t < length for t in spread)
    starts = {sample_frame_indices(7, 5, 2, np.random.default_rng(s))[0] for s in range(100)}
    assert starts == {0, 1, 2}, "every window start, the last one included, is reachable"


def test_reversal_only_when_enabled():
    forward = [sample_frame_indices(20, 5, 2, np.random.default_rng(s)) for s in range(40)]
    assert all(f == sorted(f) for f in forward)
    both = [sample_frame_indices(20, 5, 2, np.random.default_rng(s), reverse=True) for s in range(40)]
    reversed_count = sum(b == sorted(b, reverse=True) for b in both)
    assert 5 < reversed_count < 35


def test_one_transform_per_clip_and_absolute_range_crop():
    aug = ClipAugmentation(short_sides=(60,), max_size=1000, crop=(30, 50), crop_prob=1.0, crop_resize=(80,))
    for seed in range(30):
        transform = aug.sample(100, 150, np.random.default_rng(seed))
        top, left, crop_h, crop_w = transform.box
        assert transform.pre_size == (80, 120)
        assert 30 <= crop_h <= 50 and 30 <= crop_w <= 50
        assert 0 <= top <= 80 - crop_h and 0 <= left <= 120 - crop_w
        assert min(transform.size) == 60
        image = np.random.default_rng(seed).integers(0, 255, (100, 150, 3), dtype=np.uint8)
        assert transform.image(image).shape == (*transform.size, 3)
        masks = np.zeros((2, 100, 150), bool)
        assert transform.masks(masks).shape == (2, *transform.size)
    flips = [ClipAugmentation().sample(100, 150, np.random.default_rng(s)).flip for s in range(40)]
    assert 5 < sum(flips) < 35


def test_masks_and_ids_stay_consistent_with_the_source(ytvis):
    plain = ClipDataset(ytvis, num_frames=4, frame_range=3, augmentation=None, seed=1)
    flipped = ClipDataset(ytvis, num_frames=4, frame_range=3, seed=1, augmentation=ClipAugmentation(
        short_sides=(40,), max_size=1000, crop=None, flip_prob=1.0))
    for index in range(3):
        sample, mirror = plain[index], flipped[index]
        assert torch.equal(sample["frame_indices"], mirror["frame_indices"])
        assert torch.equal(sample["frames"].flip(-1), mirror["frames"])
        assert torch.equal(sample["masks"].flip(-1), mirror["masks"])
        video = ytvis[sample["video_index"]]
        index_of = ytvis.category_index()
        for t, frame in enumerate(sample["frame_indices"].tolist()):
            assert torch.equal(sample["frames"][t], torch.from_numpy(video.load_frame(frame)).permute(2, 0, 1))
            for n, instance_id in enumerate(sample["ids"].tolist()):
                ann = next(a for a in video.annotations if a.id == instance_id)
                expected = ann.mask(frame)
                expected = np.zeros((video.height, video.width), bool) if expected is None else expected
                assert np.array_equal(sample["masks"][t, n].numpy(), expected)
                assert bool(sample["present"][t, n]) == bool(expected.any())
                assert int(sample["frame_ids"][t, n]) == (instance_id if expected.any() else -1)
                assert int(sample["classes"][n]) == index_of[ann.category_id]
        assert sample["present"].any(0).all(), "every instance of the clip appears in one of its frames"


def test_same_seed_same_clip_other_seed_other_clip(ytvis):
    first = ClipDataset(ytvis, num_frames=3, frame_range=4, augmentation=SMALL_AUG, seed=5, reverse=True)
    again = ClipDataset(ytvis, num_frames=3, frame_range=4, augmentation=SMALL_AUG, seed=5, reverse=True)
    other = ClipDataset(ytvis, num_frames=3, frame_range=4, augmentation=SMALL_AUG, seed=6, reverse=True)
    assert all(_equal(first[i], again[i]) for i in range(3))
    assert not all(_equal(first[i], other[i]) for i in range(3))
    first.set_epoch(1)
    assert not all(_equal(first[i], again[i]) for i in range(3))
    assert first[0]["frames"].dtype == torch.uint8
    as_float = ClipDataset(ytvis, num_frames=3, frame_range=4, augmentation=SMALL_AUG, seed=5, reverse=True,
                           to_float=True)
    assert as_float[0]["frames"].dtype == torch.float32
    assert torch.equal(as_float[0]["frames"], again[0]["frames"].float())


def test_dataloader_workers_give_the_same_samples(ytvis):
    dataset = ClipDataset(ytvis, num_frames=3, frame_range=4, augmentation=SMALL_AUG, seed=9, samples_per_epoch=6)
    serial = [s for batch in DataLoader(dataset, batch_size=2, collate_fn=collate_clips) for s in batch]
    parallel = [s for batch in DataLoader(dataset, batch_size=2, collate_fn=collate_clips, num_workers=2)
                for s in batch]
    assert len(serial) == len(parallel) == 6
    assert all(_equal(a, b) for a, b in zip(serial, parallel))


def _coco_set(root: Path) -> Path:
    video = render_video(seed=4, frames=1, height=48, width=64, objects=(2, 3), occlusion="light")
    Image.fromarray(video.frames[0]).save(root / "img.png")
    annotations = []
    for n, mask in enumerate(video.masks[:, 0]):
        rle = mask_codec.encode(mask)
        annotations.append({"id": 10 + n, "image_id": 1, "category_id": int(video.category_ids[n]),
                            "segmentation": rle, "iscrowd": 0})
    annotations.append({"id": 99, "image_id": 1, "category_id": 1, "iscrowd": 0,
                        "segmentation": [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]]})
    data = {"images": [{"id": 1, "file_name": "img.png", "height": 48, "width": 64}],
            "annotations": annotations, "categories": [{"id": c, "name": str(c)} for c in range(1, 7)]}
    (root / "coco.json").write_text(json.dumps(data))
    return root / "coco.json"


def test_coco_images_become_rotating_pseudo_videos(tmp_path):
    coco = CocoImages(_coco_set(tmp_path), tmp_path)
    dataset = PseudoVideoClipDataset(coco, num_frames=5, augmentation=None, seed=3)
    sample = dataset[0]
    assert sample["frames"].shape == (5, 3, 48, 64)
    assert sample["ids"].tolist() == sorted(a["id"] for a in coco[0].annotations)
    assert sample["masks"].shape[:2] == (5, len(sample["ids"]))
    assert not torch.equal(sample["frames"][0], sample["frames"][-1]), "frames rotate"
    areas = sample["masks"].flatten(2).sum(-1)  # (T, N): rotation moves masks, keeps them
    assert (areas[:, -1] > 0).all()
    assert _equal(sample, PseudoVideoClipDataset(coco, num_frames=5, augmentation=None, seed=3)[0])
    angles, _ = RotationSchedule().sample(6, np.random.default_rng(0))
    assert list(angles) in (sorted(angles), sorted(angles, reverse=True))
    assert all(-15 <= a <= 15 for a in angles)


def test_a_clip_without_objects_has_empty_targets():
    from dvis.data.clips import assemble_clip
    from dvis.data.ytvis import FrameInstances

    empty = FrameInstances(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                           np.zeros((0, 8, 10), bool))
    sample = assemble_clip([np.zeros((8, 10, 3), np.uint8)] * 3, [empty] * 3, {1: 0})
    assert tuple(sample["masks"].shape) == (3, 0, 8, 10)
    assert tuple(sample["present"].shape) == (3, 0) and tuple(sample["frame_ids"].shape) == (3, 0)
    assert sample["classes"].numel() == 0 and tuple(sample["frames"].shape) == (3, 3, 8, 10)
    blank = assemble_clip(None, [empty] * 3, {1: 0})  # no pixels: the size comes from the masks
    assert tuple(blank["frames"].shape) == (3, 3, 8, 10) and blank["frames"].stride() == (0, 0, 0, 0)


def test_clips_without_frames_have_the_same_targets_and_zero_frames_of_the_right_size(tmp_path):
    from dvis.data.clips import ClipDataset
    from dvis.data.synthetic import generate
    from dvis.data.ytvis import YTVISDataset

    root = tmp_path / "s"
    generate(root, videos=2, frames=6, seed=5, height=48, width=64, objects=(2, 3))
    videos = YTVISDataset(root / "annotations.json", root / "JPEGImages")
    full = ClipDataset(videos, num_frames=3, augmentation=None, seed=2)
    light = ClipDataset(videos, num_frames=3, augmentation=None, seed=2, with_frames=False)
    for index in range(4):
        a, b = full[index], light[index]
        assert a["frames"].shape == b["frames"].shape == (3, 3, 48, 64) and int(a["frames"].sum()) > 0
        assert int(b["frames"].abs().sum()) == 0
        assert b["frames"].stride() == (0, 0, 0, 0)  # a view of one zero: no frame memory per clip
        for key in ("masks", "classes", "present", "frame_indices"):
            assert torch.equal(a[key], b[key]), key
    floats = ClipDataset(videos, num_frames=3, augmentation=None, seed=2, with_frames=False, to_float=True)[0]
    assert floats["frames"].dtype == torch.float32 and floats["frames"].stride() == (0, 0, 0, 0)
    assert floats["frames"].shape == (3, 3, 48, 64)
