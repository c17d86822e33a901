"""Segmenter-output cache: same losses as running the frozen segmenter, built once, rebuilt when the
segmenter changes (or its manifest cannot be read), refused with random augmentation; damaged cache files
and NaN losses stop training with a clear error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_train_common import make_config, one_thread, saved_model, synthetic_root, trained_params  # noqa: F401

from dvis.errors import ConfigError, DataError
from dvis.training.cache import fingerprint
from dvis.training.loop import NonFiniteLossError, Trainer


@pytest.mark.parametrize("stage", ["tracker", "refiner"])
def test_float32_cache_reproduces_the_uncached_run(stage, tmp_path, synthetic_root):
    parts = ("segmenter",) if stage == "tracker" else ("segmenter", "tracker")
    init = saved_model(tmp_path / "init", parts)
    runs = {}
    for mode in ("off", "on"):
        config = make_config(stage, synthetic_root, tmp_path / mode, init, cache={"enabled": mode, "dtype": "float32"})
        trainer = Trainer(config, stage, progress=False)
        assert (trainer.cache is not None) == (mode == "on")
        result = trainer.train()
        runs[mode] = (result.history, trained_params(trainer.trained))
    # equal up to float rounding: the segmenter runs on other batch sizes when building the cache
    for a, b in zip(runs["off"][0], runs["on"][0]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    # AdamW turns a rounding-level change of a near-zero gradient into a visible step (up to lr = 1e-3
    # per iteration), so single weights may differ by ~1e-5 after 4 steps; a different run would move
    # them by ~1e-3. Bound every weight by 1e-4 (2.5 % of 4 steps of lr).
    for name, value in runs["off"][1].items():
        assert (value - runs["on"][1][name]).abs().max() <= 1e-4, name


def test_cache_is_built_once_and_rebuilt_for_another_segmenter(tmp_path, synthetic_root):
    init = saved_model(tmp_path / "init", ("segmenter",))
    cache_dir = tmp_path / "cache"
    config = make_config("tracker", synthetic_root, tmp_path / "a", init, cache={"enabled": "on", "dir": str(cache_dir)})
    Trainer(config, "tracker", progress=False)
    files = sorted(cache_dir.glob("video_*.safetensors"))
    assert len(files) == 3
    stamps = [f.stat().st_mtime_ns for f in files]
    Trainer(config, "tracker", progress=False)  # second run (another epoch or a resume): reused as is
    assert [f.stat().st_mtime_ns for f in files] == stamps
    other = saved_model(tmp_path / "init2", ("segmenter",), seed=5)
    Trainer(make_config("tracker", synthetic_root, tmp_path / "b", other, cache={"enabled": "on", "dir": str(cache_dir)}),
            "tracker", progress=False)
    assert [f.stat().st_mtime_ns for f in files] != stamps  # a different segmenter invalidates the cache


def test_cache_key_follows_the_data_not_its_folder_or_timestamps(tmp_path, synthetic_root):
    """The same videos in another folder (a worktree, a copy) reuse the cache; a changed frame does not."""
    segmenter = torch.nn.Linear(2, 2)

    def key(root):
        return fingerprint(segmenter, [root / "annotations.json"], "float16", [root / "JPEGImages"])

    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)  # new path, new modification times
    assert key(copy) == key(synthetic_root)
    frame = sorted((copy / "JPEGImages").rglob("*.jpg"))[5]
    frame.write_bytes(frame.read_bytes() + b"\0")  # another encoding of the frame: another size
    assert key(copy) != key(synthetic_root)
    frame.write_bytes(synthetic_root.joinpath(frame.relative_to(copy)).read_bytes())
    assert key(copy) == key(synthetic_root)
    frame.rename(frame.with_name("renamed.jpg"))
    assert key(copy) != key(synthetic_root)
    frame.with_name("renamed.jpg").rename(frame)
    (copy / "annotations.json").write_text((copy / "annotations.json").read_text() + " ")
    assert key(copy) != key(synthetic_root)


def test_cache_key_frame_listing_is_the_rglob_formula(tmp_path):
    """The one-walk listing gives the key earlier versions computed with sorted(rglob) (existing
    caches stay valid), including names that sort differently as strings and as path parts."""
    import hashlib

    root = tmp_path / "frames"
    for name in ("a/1.jpg", "a-b/2.jpg", "a.b/3.jpg", "a/b/4.jpg", "z.jpg", "a/0 x.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * len(name))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "hidden.jpg").write_bytes(b"y")
    (root / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # not followed, like rglob
    segmenter = torch.nn.Linear(2, 2)
    digest = hashlib.sha256(b"v1:float16")
    for name, tensor in sorted(segmenter.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    for frame in sorted(root.rglob("*")):
        if frame.is_file():
            digest.update(f"{frame.relative_to(root).as_posix()}\0{frame.stat().st_size}\n".encode())
    assert fingerprint(segmenter, [], "float16", [root]) == digest.hexdigest()


def test_float16_cache_is_close_and_auto_follows_augmentation(tmp_path, synthetic_root):
    init = saved_model(tmp_path / "init", ("segmenter",))
    auto = Trainer(make_config("tracker", synthetic_root, tmp_path / "a", init, cache={"enabled": "auto"}), "tracker",
                   progress=False)
    assert auto.cache is not None and auto.cache.dtype == torch.float16
    video = auto.videos[0]
    cached = auto.cache.lookup(0, torch.arange(video.length))
    import numpy as np

    frames = torch.from_numpy(np.stack([video.load_frame(t) for t in range(video.length)])).permute(0, 3, 1, 2)
    with torch.no_grad():
        direct = auto.model.segmenter(auto.model.segmenter.preprocess(frames)[0])
    assert torch.equal(cached["pred_embds"], direct.pred_embds)
    assert torch.allclose(cached["mask_features"], direct.mask_features, rtol=1e-3, atol=1e-3)
    augmented = make_config("tracker", synthetic_root, tmp_path / "b", init, cache={"enabled": "auto"},
                            data={"augmentation": {"short_sides": [64, 96], "max_size": 200}})
    assert Trainer(augmented, "tracker", progress=False).cache is None
    forced = make_config("tracker", synthetic_root, tmp_path / "c", init, cache={"enabled": "on"},
                         data={"augmentation": {"short_sides": [64, 96], "max_size": 200}})
    with pytest.raises(ConfigError, match="cache.enabled = on needs deterministic clips"):
        Trainer(forced, "tracker", progress=False)


def test_non_finite_loss_names_the_iteration_and_term(tmp_path, synthetic_root, monkeypatch):
    from dvis.training.losses import DVISLoss

    init = saved_model(tmp_path / "init", ("segmenter",))
    trainer = Trainer(make_config("tracker", synthetic_root, tmp_path / "o", init), "tracker", progress=False)
    original = DVISLoss.blocks_mask_terms
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        blocks = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 1:  # from the second iteration on (one call per iteration)
            blocks[-1]["loss_dice"] = blocks[-1]["loss_dice"] * float("nan")
        return blocks

    monkeypatch.setattr(DVISLoss, "blocks_mask_terms", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 1: loss term loss_dice(_0)? is nan"):
        trainer.train()


@pytest.mark.parametrize("manifest", [b"{not json", b"\xff\xfe", b"[1, 2]", b""], ids=["junk", "binary", "list", "empty"])
def test_an_unreadable_manifest_makes_the_cache_stale(manifest, tmp_path):
    from dvis.training.cache import SegmenterCache

    cache = SegmenterCache(tmp_path / "cache", "key-1")
    cache.prepare()
    stale = cache.video_path(0)
    stale.write_bytes(b"outputs of an unknown segmenter")
    (tmp_path / "cache" / "manifest.json").write_bytes(manifest)
    cache.prepare()  # rebuilt, not a JSONDecodeError
    assert not stale.exists()
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["key"] == "key-1"


def test_a_damaged_cache_file_is_a_data_error_naming_it(tmp_path):
    from safetensors.torch import save_file

    from dvis.training.cache import SegmenterCache

    cache = SegmenterCache(tmp_path, "key")
    cache.video_path(0).write_bytes(b"\x00" * 20)
    with pytest.raises(DataError, match=r"video_000000\.safetensors is damaged: not a readable safetensors file"):
        cache.lookup(0, torch.tensor([0]))
    save_file({"pred_embds": torch.zeros(1, 2, 3)}, str(cache.video_path(1)))
    with pytest.raises(DataError, match="video_000001.safetensors is damaged: no pred_logits, mask_features, "
                                        "pred_masks; delete the file"):
        cache.lookup(1, torch.tensor([0]))
