"""Robustness: hostile annotation / results / mask files fail with a typed, named error.

Property for every reader: a malformed input either loads into something whose every mask decodes
to a correct boolean mask, or raises :class:`dvis.errors.DataError` (never a bare KeyError,
TypeError, IndexError, a hang or an interpreter crash). Inputs start from a valid document and get
1-3 random mutations (a field replaced by random JSON, deleted, or a list emptied).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from dvis.data import masks as data_masks
from dvis.data.vipseg import VIPSegDataset
from dvis.data.ytvis import YTVISDataset
from dvis.errors import DataError, DVISError
from dvis.evaluation import rle as eval_rle
from dvis.evaluation.stq import evaluate_set as stq_evaluate
from dvis.evaluation.vipseg_io import iter_videos, open_set
from dvis.evaluation.vpq import evaluate_set as vpq_evaluate
from dvis.evaluation.ytvis_data import parse_ground_truth, parse_results

FUZZ = settings(max_examples=int(__import__("os").environ.get("DVIS_FUZZ_EXAMPLES", 100)), deadline=2000, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)
H, W, T = 6, 5, 2

json_scalars = (st.none() | st.booleans() | st.integers(-(2**40), 2**40)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _spots(node, out=None) -> list:
    """Every (container, key) position of a JSON tree."""
    out = [] if out is None else out
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((node, key))
            _spots(value, out)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.append((node, index))
            _spots(value, out)
    return out


@st.composite
def mutated(draw, document: dict) -> dict:
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        spots = _spots(doc)
        if not spots:
            break
        container, key = draw(st.sampled_from(spots))
        action = draw(st.sampled_from(["replace", "replace", "delete", "empty"]))
        if action == "replace":
            container[key] = draw(json_values)
        elif action == "delete":
            del container[key]
        elif isinstance(container[key], (list, dict)):
            container[key] = type(container[key])()
    return doc


def _square(t: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[t:t + 3, 1:4] = True
    return mask


def _compressed(mask: np.ndarray) -> dict:
    return data_masks.encode(mask)


def _uncompressed(mask: np.ndarray) -> dict:
    flat = mask.T.ravel().astype(np.int64)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": [H, W], "counts": ([0] if flat[0] else []) + counts}


def ytvis_document() -> dict:
    polygon = [[1.0, 1.0, 4.0, 1.0, 4.0, 4.0, 1.0, 4.0]]
    return {
        "videos": [{"id": 1, "file_names": ["v/0.jpg", "v/1.jpg"], "height": H, "width": W, "length": T}],
        "annotations": [
            {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "height": H, "width": W, "length": 1,
             "segmentations": [_compressed(_square(0)), _uncompressed(_square(1))],
             "areas": [9, 9], "bboxes": [[1, 0, 3, 3], [1, 1, 3, 3]]},
            {"id": 2, "video_id": 1, "category_id": 2, "segmentations": [polygon, None], "areas": [9, None]},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


def results_document() -> list:
    return [{"video_id": 1, "category_id": 1, "score": 0.9,
             "segmentations": [_compressed(_square(0)), _uncompressed(_square(1))]},
            {"video_id": 1, "category_id": 2, "score": 0.5,
             "segmentations": [[[1.0, 1.0, 4.0, 1.0, 4.0, 4.0]], None]}]


def _check_decoded(mask, height: int, width: int) -> None:
    """A decoded mask must be a real boolean (H, W) mask (no garbage from a malformed RLE)."""
    if mask is None:
        return
    assert mask.dtype == bool and mask.shape == (height, width)


def _check_rle(rle, height: int, width: int) -> None:
    """An accepted RLE must describe exactly height*width pixels (area <= pixels, decodes)."""
    if rle is None:
        return
    area = int(mask_utils.area(rle))
    decoded = mask_utils.decode(rle)
    assert decoded.shape == (height, width) and set(np.unique(decoded)) <= {0, 1}
    assert int(decoded.sum()) == area


def _assert_named(err: DVISError) -> None:
    assert isinstance(err, DataError), type(err)
    assert str(err).strip(), "empty error message"


# ----------------------------------------------------------------------------- YouTube-VIS reader


@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@FUZZ
@given(doc=mutated(ytvis_document()))
def test_ytvis_reader_fuzz(doc, scratch):
    path = scratch / "ann.json"
    path.write_text(json.dumps(doc))
    try:
        dataset = YTVISDataset(path, scratch, check_files=False)
        for index in range(len(dataset)):
            video = dataset[index]
            for t in range(video.length):
                for mask in video.frame_instances(t).masks:
                    _check_decoded(mask, video.height, video.width)
    except DVISError as err:
        _assert_named(err)
        assert str(path) in str(err)


@FUZZ
@given(raw=st.binary(max_size=64) | st.text(max_size=40).map(str.encode))
def test_ytvis_reader_random_bytes(raw, scratch):
    path = scratch / "raw.json"
    path.write_bytes(raw)
    with pytest.raises(DataError) as info:
        YTVISDataset(path, scratch, check_files=False)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- evaluation readers


@pytest.mark.filterwarnings("ignore::dvis.evaluation.ytvis_data.FrameCountWarning")
@FUZZ
@given(doc=mutated(ytvis_document()))
def test_ground_truth_parser_fuzz(doc):
    try:
        gt = parse_ground_truth(doc, "gt.json")
    except DVISError as err:
        _assert_named(err)
        assert "gt.json" in str(err)
        return
    for track in gt.tracks:
        video = gt.videos[track.video_id]
        for rle in track.rles:
            _check_rle(rle, video.height, video.width)


@pytest.mark.filterwarnings("ignore::dvis.evaluation.ytvis_data.FrameCountWarning")
@FUZZ
@given(doc=mutated({"results": results_document()}))
def test_results_parser_fuzz(doc):
    gt = parse_ground_truth(ytvis_document(), "gt.json")
    try:
        dets = parse_results(doc.get("results"), gt, "res.json")
    except DVISError as err:
        _assert_named(err)
        assert "res.json" in str(err)
        return
    for det in dets:
        assert isinstance(det.score, float)
        for rle in det.rles:
            _check_rle(rle, H, W)


# ----------------------------------------------------------------------------- RLE / polygons

counts_lists = st.lists(st.integers(-5, 40) | st.floats(allow_nan=True) | st.text(max_size=2), max_size=8)
counts_strings = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=130), max_size=12)
coordinates = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70) | st.text(max_size=2)
polygons = st.lists(st.lists(coordinates, max_size=10), max_size=3)


@FUZZ
@given(segm=st.fixed_dictionaries({"size": st.just([H, W]) | json_values,
                                   "counts": counts_lists | counts_strings | json_values})
       | polygons | json_values)
def test_mask_decoders_fuzz(segm):
    """Both decoders: a typed error, or a mask that is exactly what the RLE / polygon encodes."""
    try:
        rle = eval_rle.to_rle(segm, H, W, "res.json: entry 0")
    except DataError as err:
        assert "res.json: entry 0" in str(err)
    else:
        _check_rle(rle, H, W)
    try:
        mask = data_masks.decode(segm, H, W, where="ann.json: frame 0")
    except DataError as err:
        assert "ann.json: frame 0" in str(err)
    else:
        _check_decoded(mask, H, W)


@FUZZ
@given(mask=st.lists(st.booleans(), min_size=H * W, max_size=H * W))
def test_valid_masks_round_trip_through_every_encoding(mask):
    mask = np.array(mask, bool).reshape(H, W)
    for encoded in (_compressed(mask), _uncompressed(mask)):
        assert np.array_equal(data_masks.decode(encoded, H, W), mask)
        rle = eval_rle.to_rle(encoded, H, W, "x")
        assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)


@pytest.mark.parametrize("counts, problem", [
    ([0, 3], "30"),  # covers 3 of 30 pixels: pycocotools would decode uninitialised memory
    ([0, 40], "30"),
    ([-1, 31], "negative"),
    ("", "30"),
    ("0000000000", "30"),
    ("zz", "character"),
    ("é", "non-ASCII"),
    ("5o", "truncated"),
    ("oooooooo0", "more than 6 characters"),
    ([1.5, 28.5], "integer"),
])
def test_malformed_rle_counts_are_refused(counts, problem):
    segm = {"size": [H, W], "counts": counts}
    with pytest.raises(DataError, match=problem):
        eval_rle.to_rle(segm, H, W, "res.json: entry 3")
    with pytest.raises(DataError, match=problem):
        data_masks.decode(segm, H, W, where="ann.json")


_CRASH_PROBE = """
import sys
from dvis.errors import DataError
from dvis.data import masks
from dvis.evaluation import rle
poly = [[0.0, 0.0, float(sys.argv[1]), 0.0, 3.0, 3.0]]
for decode in (lambda: rle.to_rle(poly, 4, 4, "res"), lambda: masks.decode(poly, 4, 4)):
    try:
        decode()
    except DataError as err:
        print("refused:", err)
"""


@pytest.mark.parametrize("coordinate", ["1e12", "nan", "inf", "-1e30"])
def test_polygon_coordinates_that_crash_or_hang_pycocotools_are_refused(coordinate):
    """pycocotools segfaults on 1e12 and loops forever on NaN / inf; run in a child process so a
    regression fails instead of taking the test run down."""
    done = subprocess.run([sys.executable, "-c", _CRASH_PROBE, coordinate], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("refused:") == 2 and "coordinate" in done.stdout


# ----------------------------------------------------------------------------- VIPSeg readers

VIPSEG_GT = Path(__file__).parent / "data" / "metrics_example" / "vpq_a_small" / "gt"
VIPSEG_JSON = VIPSEG_GT / "panoptic_gt_VIPSeg_val.json"


def _small_vipseg() -> dict:
    data = json.loads(VIPSEG_JSON.read_text())
    video = data["videos"][0]
    video["images"] = video["images"][:2]
    ann = next(a for a in data["annotations"] if a["video_id"] == video["video_id"])
    ann["annotations"] = ann["annotations"][:2]
    for frame in ann["annotations"]:
        frame["segments_info"] = frame["segments_info"][:2]
    return {"videos": [video], "annotations": [ann], "categories": data["categories"][:60]}


@FUZZ
@given(doc=mutated(_small_vipseg()))
def test_vipseg_reader_fuzz(doc, scratch):
    path = scratch / "vipseg.json"
    path.write_text(json.dumps(doc))
    try:
        dataset = VIPSegDataset(path, VIPSEG_GT / "panomasksRGB")
        for index in range(len(dataset)):
            video = dataset[index]
            for t in range(video.length):
                video.frame_instances(t)
    except DVISError as err:
        _assert_named(err)


@FUZZ
@given(doc=mutated(_small_vipseg()), fuzz_truth=st.booleans())
def test_vpq_stq_set_reader_fuzz(doc, fuzz_truth, scratch):
    """The evaluation's VIPSeg reader, VPQ and STQ with a fuzzed prediction or ground-truth JSON
    (the ground-truth PNGs double as the predicted PNGs)."""
    pred_dir = scratch / "pred"
    pred_dir.mkdir(exist_ok=True)
    gt_json = scratch / "gt.json"
    gt_json.write_text(json.dumps(doc if fuzz_truth else _small_vipseg()))
    (pred_dir / "pred.json").write_text(json.dumps(_small_vipseg() if fuzz_truth else doc))
    try:
        pset = open_set(gt_json, VIPSEG_GT / "panomasksRGB", pred_dir)
        pset.pred_png_dir = VIPSEG_GT / "panomasksRGB"
        for _video_id, frames in iter_videos(pset):
            assert frames
        vpq_evaluate(pset, script_nframes=(1, 2), paper_nframes=(1,))
        stq_evaluate(pset)
    except DVISError as err:
        _assert_named(err)


@pytest.mark.parametrize("polygons, problem", [
    ([[1.0, 1.0, 4.0, 1.0]], "at least 3 x, y pairs"),  # pycocotools would read 4 values as a box
    ([[1.0, 1.0, 4.0, 1.0, 4.0, 4.0, 2.0]], "at least 3 x, y pairs"),
    ([[1.0, 1.0, "4", 1.0, 4.0, 4.0]], "coordinate '4'"),
    ([[1.0, 1.0, True, 1.0, 4.0, 4.0]], "coordinate True"),
    ([[[1.0, 1.0], [4.0, 1.0], [4.0, 4.0]]], "at least 3 x, y pairs"),
    ([[1.0, 1.0, 4.0, 1.0, 4.0, 4.0], 7], "polygon 1"),
])
def test_malformed_polygons_are_refused(polygons, problem):
    with pytest.raises(DataError, match=problem):
        eval_rle.to_rle(polygons, H, W, "res.json: entry 0")
    with pytest.raises(DataError, match=problem):
        data_masks.decode(polygons, H, W, where="ann.json")


@pytest.mark.parametrize("counts, problem", [("0000000000", "covers 0 pixels"), ("zz", "character"),
                                             ("5o", "truncated"), ([0, 3], "covers 3 pixels")])
def test_results_file_names_the_frame_with_the_bad_rle(counts, problem):
    """Results are checked a track at a time (vectorised); the error still names the frame."""
    gt = parse_ground_truth(ytvis_document(), "gt.json")
    results = results_document()
    results[1]["segmentations"][1] = {"size": [H, W], "counts": counts}
    with pytest.raises(DataError, match=rf"res\.json: entry 1: segmentations\[1\]: .*{problem}"):
        parse_results(results, gt, "res.json")
