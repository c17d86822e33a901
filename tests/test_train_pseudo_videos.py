"""COCO pseudo videos in training: ``data.pseudo_videos`` (mixed with the video set) and
``data.format: coco-pseudo-video``; the release's category maps, the seeded mix, cache refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_train_common import make_config, one_thread, saved_model, synthetic_root  # noqa: F401 (fixtures)

from dvis.data.coco import MappedCocoImages
from dvis.data.coco_categories import COCO_CATEGORY_MAPS, COCO_TO_YTVIS_2019, resolve_category_map
from dvis.errors import ConfigError, DataError
from dvis.training.config import apply_overrides, train_config_from_dict
from dvis.training.data import (
    MIX_BLOCK,
    ClipOrder,
    MixedClipDataset,
    MixedClipOrder,
    block_counts,
    build_clip_dataset,
    build_pseudo_images,
    build_video_dataset,
    clip_order,
)
from dvis.training.loop import Trainer, cache_wanted

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CATEGORY_MAP = {1: 2, 2: 5}  # COCO-like ids of the tiny set -> synthetic video category ids; 3 unmapped


def _box(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    """3 images of 64x48: two with objects of mapped categories (and a crowd / an unmapped one),
    one with an unmapped object only."""
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    names = ("a.png", "b.jpg", "c.png")
    for name in names:
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "images" / name)
    images = [{"id": i + 1, "file_name": n, "height": 48, "width": 64} for i, n in enumerate(names)]
    anns = [
        {"id": 10, "image_id": 1, "category_id": 1, "segmentation": _box(8, 8, 30, 30), "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 3, "segmentation": _box(35, 5, 60, 40), "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 2, "segmentation": _box(40, 30, 62, 46), "iscrowd": 1},
        {"id": 20, "image_id": 2, "category_id": 2, "segmentation": _box(4, 4, 40, 44), "iscrowd": 0},
        {"id": 21, "image_id": 2, "category_id": 1, "segmentation": _box(42, 10, 60, 30), "iscrowd": 0},
        {"id": 30, "image_id": 3, "category_id": 3, "segmentation": _box(10, 10, 50, 40), "iscrowd": 0},
    ]
    categories = [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}, {"id": 3, "name": "three"}]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return root


def pseudo_section(coco_root: Path, **extra) -> dict:
    return {"root": str(coco_root), "annotations": "instances.json", "image_root": "images",
            "category_map": dict(CATEGORY_MAP), "ratio": 1.0, "video_ratio": 1.0, **extra}


def pseudo_config(stage, synthetic_root, out, coco_root, init=None, data=None, solver=None, cache="off", **extra):
    """The tiny synthetic config of ``stage`` with ``data.pseudo_videos`` (``extra`` updates that section)."""
    return make_config(stage, synthetic_root, out, init, data={"pseudo_videos": pseudo_section(coco_root, **extra),
                                                               **(data or {})},
                       solver=solver or {}, cache={"enabled": cache})


# ------------------------------------------------------------------------------------ categories
def test_named_maps_are_the_release_maps_and_unknown_names_are_listed():
    assert resolve_category_map("ytvis19") == COCO_TO_YTVIS_2019
    assert resolve_category_map("ytvis19")[4] == 21 and resolve_category_map("ovis")[8] == 25
    assert set(COCO_CATEGORY_MAPS) == {"ytvis19", "ytvis21", "ovis"}
    assert max(resolve_category_map("ytvis21").values()) <= 40 and max(resolve_category_map("ovis").values()) <= 25
    with pytest.raises(ConfigError, match="'ytvis2019' is not a known mapping; known: ytvis19, ytvis21, ovis"):
        resolve_category_map("ytvis2019")
    with pytest.raises(ConfigError, match="entry 'x'"):
        resolve_category_map({"x": 1})
    assert resolve_category_map({1: 3}) == {1: 3}


def test_mapping_drops_unmapped_and_crowd_objects_and_skips_empty_images(coco_root, synthetic_root, tmp_path):
    config = pseudo_config("segmenter", synthetic_root, tmp_path, coco_root)
    videos = build_video_dataset(config.data)
    images = build_pseudo_images(config.data, videos)
    assert isinstance(images, MappedCocoImages) and len(images) == 2  # image 3: only an unmapped object
    assert [[(a["id"], a["category_id"]) for a in images[i].annotations] for i in range(2)] == [
        [(10, 2)], [(20, 5), (21, 2)]]
    assert images.category_index() == videos.category_index()
    clips = build_clip_dataset(config.data, videos, seed=0, pseudo=images)
    sample = clips[1 * 2 + 1]  # MixedClipDataset index: local 1 of source 1 (the pseudo videos)
    index = videos.category_index()
    assert sample["source"] == 1 and sample["ids"].tolist() == [20, 21]
    assert sample["classes"].tolist() == [index[5], index[2]]
    assert sample["frames"].shape[:2] == (2, 3) and sample["masks"].shape[:2] == (2, 2)
    with pytest.raises(DataError, match=r"data.pseudo_videos.category_map: video category ids \[99\]"):
        MappedCocoImages(images.images, {1: 99}, index, "data.pseudo_videos.category_map")


# ---------------------------------------------------------------------------------------- config
def test_config_section_parses_and_errors_name_the_key(coco_root, synthetic_root, tmp_path):
    config = pseudo_config("segmenter", synthetic_root, tmp_path, coco_root, category_map="ytvis19", ratio=1.0,
                           video_ratio=0.75)
    p = config.data.pseudo_videos
    assert (p.category_map, p.ratio, p.video_ratio, p.max_size) == ("ytvis19", 1.0, 0.75, 768)
    assert make_config("segmenter", synthetic_root, tmp_path).data.pseudo_videos is None
    values = apply_overrides({"data": {}}, ["data.pseudo_videos.ratio=0.5", "data.pseudo_videos.category_map=ovis"])
    assert values["data"]["pseudo_videos"] == {"ratio": 0.5, "category_map": "ovis"}
    with pytest.raises(ConfigError, match="did you mean: data.pseudo_videos.ratio"):
        apply_overrides({}, ["data.pseudo_videos.ratoi=1"])
    for extra, message in [({"ratio": 0}, "data.pseudo_videos.ratio = 0"),
                           ({"video_ratio": -1.0}, "video_ratio = -1.0: both must be > 0"),
                           ({"ratio": 1e-5}, "at least 1/1000"),
                           ({"category_map": "coco"}, "data.pseudo_videos.category_map = 'coco' is not a known "
                                                      "mapping; known: ytvis19, ytvis21, ovis"),
                           ({"category_map": None}, "data.pseudo_videos.category_map = None")]:
        with pytest.raises(ConfigError, match=message):
            pseudo_config("segmenter", synthetic_root, tmp_path, coco_root, **extra)
    with pytest.raises(ConfigError, match="data.pseudo_videos needs data.format = 'ytvis'"):
        pseudo_config("segmenter", synthetic_root, tmp_path, coco_root, data={"format": "vipseg"})


def test_missing_files_are_data_errors_naming_the_key(coco_root, synthetic_root, tmp_path):
    config = pseudo_config("segmenter", synthetic_root, tmp_path, coco_root, annotations="missing.json")
    with pytest.raises(DataError, match=f"data.pseudo_videos.annotations: {coco_root / 'missing.json'} does not"):
        build_pseudo_images(config.data, build_video_dataset(config.data))
    config = pseudo_config("segmenter", synthetic_root, tmp_path, coco_root, image_root=None)
    with pytest.raises(DataError, match="data.pseudo_videos.image_root is not set"):
        build_pseudo_images(config.data, build_video_dataset(config.data))


# ----------------------------------------------------------------------------------------- order
def test_mixed_order_follows_the_weights_and_is_a_pure_function_of_seed_and_position():
    order = MixedClipOrder((7, 11), (0.75, 1.0), seed=3)
    positions = range(3 * MIX_BLOCK + 17)
    indices = [order.index(p) for p in positions]
    sources = np.array([i % 2 for i in indices])
    assert block_counts((0.75, 1.0)) == (429, 571)
    assert np.count_nonzero(sources[:MIX_BLOCK] == 1) == 571  # exactly the share in every block
    assert abs(sources.mean() - 1 / 1.75) < 0.01
    assert [order.index(p) for p in reversed(positions)] == indices[::-1]  # no hidden state
    assert [MixedClipOrder((7, 11), (0.75, 1.0), seed=3).index(p) for p in positions] == indices
    assert [MixedClipOrder((7, 11), (0.75, 1.0), seed=4).index(p) for p in positions] != indices
    for source, size in ((0, 7), (1, 11)):  # each source: one seeded permutation per epoch, as ClipOrder
        local = [i // 2 for i in indices if i % 2 == source]
        assert local[: 3 * size] == [ClipOrder(size, 3).index(k) for k in range(3 * size)]


def test_video_only_order_is_unchanged(synthetic_root, tmp_path):
    config = make_config("segmenter", synthetic_root, tmp_path)
    videos = build_video_dataset(config.data)
    order = clip_order(config.data, videos, None, seed=5)
    assert isinstance(order, ClipOrder)
    n = len(videos)
    expected = [e * n + int(np.random.default_rng([5, 7919, e]).permutation(n)[o]) for e in range(4) for o in range(n)]
    assert [order.index(p) for p in range(4 * n)] == expected
    assert type(build_clip_dataset(config.data, videos, 5)).__name__ == "ClipDataset"


def test_mixed_dataset_draws_both_sources(coco_root, synthetic_root, tmp_path):
    config = pseudo_config("segmenter", synthetic_root, tmp_path, coco_root, ratio=1.0, video_ratio=3.0)
    videos = build_video_dataset(config.data)
    images = build_pseudo_images(config.data, videos)
    clips = build_clip_dataset(config.data, videos, seed=1, pseudo=images)
    order = clip_order(config.data, videos, images, seed=1)
    assert isinstance(clips, MixedClipDataset) and isinstance(order, MixedClipOrder)
    picked = [clips[order.index(p)] for p in range(24)]
    assert {s["source"] for s in picked} == {0, 1}
    first = clips[order.index(3)]
    assert torch.equal(first["frames"], picked[3]["frames"]) and torch.equal(first["masks"], picked[3]["masks"])


# -------------------------------------------------------------------------------------- training
def test_segmenter_trains_with_pseudo_videos_and_resumes_exactly(coco_root, synthetic_root, tmp_path):
    def config(out):
        return pseudo_config("segmenter", synthetic_root, out, coco_root, data={"augmentation": {
            "short_sides": [48], "max_size": 64, "crop": None}}, max_size=64,
            solver={"max_iter": 2, "checkpoint_period": 1})

    straight = Trainer(config(tmp_path / "a"), "segmenter", progress=False)
    assert straight.train().model_dir is not None
    first = Trainer(config(tmp_path / "b"), "segmenter", progress=False)
    assert first.train(stop_at=1).iteration == 1
    resumed = Trainer(config(tmp_path / "b"), "segmenter", resume=True, progress=False)
    assert resumed.train().iteration == 2
    for (name, a), (_, b) in zip(straight.trained.state_dict().items(), resumed.trained.state_dict().items()):
        assert torch.equal(a, b), name


def test_cache_on_with_pseudo_videos_is_refused_and_auto_turns_it_off(coco_root, synthetic_root, tmp_path, capsys):
    on = pseudo_config("tracker", synthetic_root, tmp_path, coco_root, cache="on")
    with pytest.raises(ConfigError, match=r"cache.enabled = on .*\(data.pseudo_videos"):
        cache_wanted(on, "tracker")
    assert not cache_wanted(on, "segmenter")  # the segmenter stage uses no cache
    init = saved_model(tmp_path / "init", ("segmenter",))
    # augmentation null (the tiny config's): without pseudo videos, auto would cache the video clips
    trainer = Trainer(pseudo_config("tracker", synthetic_root, tmp_path / "out", coco_root, init, cache="auto"),
                      "tracker")
    assert trainer.cache is None
    assert "the segmenter cache is off (pseudo videos" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="data.pseudo_videos"):
        Trainer(pseudo_config("tracker", synthetic_root, tmp_path / "on", coco_root, init, cache="on"), "tracker")


def test_coco_pseudo_video_format_trains_on_pseudo_videos_only(coco_root, synthetic_root, tmp_path):
    values = {"output_dir": str(tmp_path / "out"), "seed": 0,
              "model": make_config("segmenter", synthetic_root, tmp_path).model,
              "data": {"format": "coco-pseudo-video", "root": str(coco_root), "annotations": "instances.json",
                       "image_root": "images", "num_frames": 2, "num_workers": 0,
                       "augmentation": {"short_sides": [48], "max_size": 64}},
              "solver": {"max_iter": 1, "batch_size": 1, "clips_per_gpu": 1}, "loss": {"num_points": 64}}
    config = train_config_from_dict(values, "test")
    images = build_video_dataset(config.data)
    assert len(images) == 3 and images.category_index() == {1: 0, 2: 1, 3: 2}  # the JSON's own classes
    sample = build_clip_dataset(config.data, images, 0)[2]
    assert sample["classes"].tolist() == [2] and sample["frames"].shape[:2] == (2, 3)
    assert Trainer(config, "segmenter", progress=False).train().iteration == 1
