"""Synthetic occlusion benchmark: determinism, formats, occlusion fields, readers agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from dvis.cli import main
from dvis.data.synth_scene import sample_scene
from dvis.data.synthetic import generate, occlusion_level, render_video
from dvis.data.vipseg import VIPSegDataset
from dvis.data.ytvis import YTVISDataset
from dvis.errors import InputError

DATA = Path(__file__).parent / "data"
ARGS = dict(videos=3, frames=8, seed=7, height=48, width=64, objects=(2, 4), occlusion="heavy")


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    generate(out, panoptic=True, **ARGS)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_identical_bytes(synth_set, tmp_path):
    again = tmp_path / "again"
    generate(again, panoptic=True, **ARGS)
    assert _files(synth_set) == _files(again)
    other = tmp_path / "other"
    generate(other, panoptic=True, **{**ARGS, "seed": 8})
    assert _files(other)["annotations.json"] != _files(synth_set)["annotations.json"]


def test_layout_and_youtube_vis_fields(synth_set):
    data = json.loads((synth_set / "annotations.json").read_text())
    assert len(data["videos"]) == 3
    for video in data["videos"]:
        assert video["length"] == 8 == len(video["file_names"])
        for name in video["file_names"]:
            with Image.open(synth_set / "JPEGImages" / name) as image:
                assert image.size == (64, 48) and image.mode == "RGB"
    assert data["annotations"], "no objects generated"
    for ann in data["annotations"]:
        assert {"id", "video_id", "category_id", "segmentations", "areas", "bboxes", "iscrowd"} <= set(ann)
        assert len(ann["segmentations"]) == len(ann["areas"]) == len(ann["bboxes"]) == len(ann["occlusions"]) == 8
        assert any(s is not None for s in ann["segmentations"])


def test_pycocotools_and_own_reader_agree_with_fields(synth_set):
    data = json.loads((synth_set / "annotations.json").read_text())
    dataset = YTVISDataset(synth_set / "annotations.json", synth_set / "JPEGImages")
    records = {dataset[i].video_id: dataset[i] for i in range(len(dataset))}
    for ann in data["annotations"]:
        record = records[ann["video_id"]]
        mine = next(a for a in record.annotations if a.id == ann["id"])
        assert mine.extra["occlusion_level"] == ann["occlusion_level"]
        for t, seg in enumerate(ann["segmentations"]):
            if seg is None:
                assert ann["areas"][t] is None and ann["bboxes"][t] is None and mine.mask(t) is None
                continue
            rle = {"size": seg["size"], "counts": seg["counts"].encode()}
            coco_mask = mask_utils.decode(rle).astype(bool)
            assert coco_mask.shape == (48, 64)
            assert int(coco_mask.sum()) == ann["areas"][t] == int(mask_utils.area(rle)) > 0
            assert np.allclose(mask_utils.toBbox(rle), ann["bboxes"][t])
            assert np.array_equal(mine.mask(t), coco_mask)


def test_jpeg_frames_and_masks_match_in_memory_render(synth_set):
    dataset = YTVISDataset(synth_set / "annotations.json", synth_set / "JPEGImages")
    video = render_video(seed=ARGS["seed"], frames=8, height=48, width=64, objects=(2, 4),
                         occlusion="heavy", video_index=1)
    record = dataset[1]
    for t in range(8):
        diff = np.abs(record.load_frame(t).astype(int) - video.frames[t].astype(int)).mean()
        assert diff < 6.0, f"frame {t}: JPEG differs from the render by {diff}"
    assert len(record.annotations) == video.masks.shape[0]
    for n, ann in enumerate(record.annotations):
        assert ann.category_id == video.category_ids[n]
        for t in range(8):
            decoded = ann.mask(t)
            expected = video.masks[n, t]
            assert np.array_equal(decoded if decoded is not None else np.zeros_like(expected), expected)
            if video.occlusions[n][t] is None:
                assert ann.extra["occlusions"][t] is None
            else:
                assert ann.extra["occlusions"][t] == pytest.approx(video.occlusions[n][t], abs=1e-6)


def test_occlusion_definition_and_bands(synth_set):
    data = json.loads((synth_set / "annotations.json").read_text())
    for ann in data["annotations"]:
        values = [o for o in ann["occlusions"] if o is not None]
        assert all(0.0 <= o <= 1.0 for o in values)
        assert ann["occlusion"] == pytest.approx(np.mean(values), abs=1e-6)
        assert ann["occlusion_level"] == occlusion_level(ann["occlusion"])
        for seg, occ in zip(ann["segmentations"], ann["occlusions"]):
            if seg is None and occ is not None:
                assert occ == pytest.approx(1.0)  # in the frame but fully hidden
    assert [occlusion_level(x) for x in (0.0, 0.2499, 0.25, 0.5, 0.5001, 1.0)] == [
        "light", "light", "medium", "medium", "heavy", "heavy"]


def test_occlusion_level_controls_overlap():
    means = {}
    for level in ("light", "medium", "heavy"):
        videos = [render_video(seed=3, frames=12, height=64, width=64, objects=(3, 5), occlusion=level,
                               video_index=i) for i in range(6)]
        values = [o for v in videos for track in v.occlusions for o in track if o is not None]
        means[level] = float(np.mean(values))
    assert means["light"] < 0.2 < means["heavy"]
    assert means["light"] < means["medium"] < means["heavy"]


def test_objects_enter_and_leave_and_look_alikes_cross():
    video = [render_video(seed=11, frames=40, height=64, width=64, objects=(3, 5), video_index=i) for i in range(4)]
    tracks = [t for v in video for t in v.occlusions]
    enters = sum(t[0] is None and any(o is not None for o in t) for t in tracks)
    leaves = sum(t[-1] is None and any(o is not None for o in t) for t in tracks)
    assert enters > 0 and leaves > 0
    for index in range(5):
        scene = sample_scene(np.random.default_rng([0, index]), 64, 64, 20, (2, 5), "medium")
        looks = [(o.category_id, o.colour, o.texture, round(o.radius / 4)) for o in scene.objects]
        pairs = [(a, b) for a in range(len(looks)) for b in range(a + 1, len(looks)) if looks[a][:3] == looks[b][:3]]
        assert pairs, "no look-alike pair"
        crossing = any(
            min(np.hypot(*(scene.objects[a].centre(t) - scene.objects[b].centre(t))) for t in range(20))
            < scene.objects[a].radius
            for a, b in pairs
        )
        assert crossing, "look-alikes never cross"


def test_panoptic_output_matches_vipseg_layout_and_instances(synth_set):
    golden = json.loads((DATA / "metrics_example/vpq_a_small/gt/panoptic_gt_VIPSeg_val.json").read_text())
    ours = json.loads((synth_set / "panoptic_gt_VIPSeg_val.json").read_text())
    assert set(ours) == set(golden)
    assert set(ours["videos"][0]) == set(golden["videos"][0])
    assert set(ours["videos"][0]["images"][0]) == set(golden["videos"][0]["images"][0])
    assert set(ours["annotations"][0]["annotations"][0]) == set(golden["annotations"][0]["annotations"][0])
    assert set(ours["annotations"][0]["annotations"][0]["segments_info"][0]) == set(
        golden["annotations"][0]["annotations"][0]["segments_info"][0])
    assert set(ours["categories"][0]) == set(golden["categories"][0])

    pan = VIPSegDataset(synth_set / "panoptic_gt_VIPSeg_val.json", synth_set / "panomasksRGB",
                        synth_set / "JPEGImages", check_images=True)
    inst = YTVISDataset(synth_set / "annotations.json", synth_set / "JPEGImages")
    stuff = {c["id"] for c in ours["categories"] if not c["isthing"]}
    assert stuff and pan.stuff_ids == stuff
    for v in range(len(pan)):
        pvideo, ivideo = pan[v], inst[v]
        for t in range(pvideo.length):
            ids = pvideo.panoptic(t)
            assert (ids > 0).all(), "every pixel belongs to a thing or a stuff segment"
            for seg in pvideo.frames_info[t].segments_info:
                assert int((ids == seg["id"]).sum()) == seg["area"]
            things = pvideo.frame_instances(t)
            thing_masks = sorted(m.sum() for m, c in zip(things.masks, things.category_ids) if c not in stuff)
            inst_masks = sorted(m.sum() for m in ivideo.frame_instances(t).masks)
            assert thing_masks == inst_masks


def test_cli_writes_set_and_refuses_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--videos", "1", "--frames", "3", "--seed", "1", "--height", "32",
                 "--width", "40", "--objects", "1-2", "--occlusion", "light"]) == 0
    assert (out / "annotations.json").is_file() and not (out / "panomasksRGB").exists()
    assert "annotations.json" in capsys.readouterr().out
    assert main(["synth", str(out), "--videos", "1", "--frames", "3", "--seed", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["cli"], "no staging folder left behind"


def test_bad_arguments_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="occlusion"):
        generate(tmp_path / "a", 1, 3, 0, occlusion="extreme")
    with pytest.raises(InputError, match="frames"):
        generate(tmp_path / "b", 1, 0, 0)
    with pytest.raises(InputError, match="objects"):
        generate(tmp_path / "c", 1, 3, 0, objects=(4, 2))


def test_colour_is_tied_to_class():
    from dvis.data.synth_shapes import PALETTE, SHAPES, class_colours

    owners = {c: k for k in range(1, len(SHAPES) + 1) for c in class_colours(k)}
    assert sorted(owners) == list(range(len(PALETTE)))  # every colour belongs to exactly one class
    for seed in range(20):
        scene = sample_scene(np.random.default_rng(seed), 128, 128, 12, (2, 6), "heavy")
        assert all(owners[o.colour] == o.category_id for o in scene.objects)
