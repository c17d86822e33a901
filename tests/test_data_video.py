"""Video input (files, frame folders, image lists) and the atomic video writer."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
from PIL import Image

from dvis.data.video import VideoWriter, natural_key, open_video
from dvis.errors import DataError, InputError


def _smooth_frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Gradients that shift each frame: compress well, so a decoded copy stays close."""
    rows, cols = np.mgrid[0:height, 0:width]
    return [np.stack([(cols * 3 + 10 * t) % 256, (rows * 4) % 256, np.full_like(rows, 40 + 15 * t)], -1)
            .astype(np.uint8) for t in range(count)]


def _noisy_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_writer_round_trip_keeps_count_size_fps(tmp_path, suffix):
    frames = _smooth_frames(10)
    path = tmp_path / f"clip{suffix}"
    with VideoWriter(path, fps=12.5 if suffix == ".mp4" else 10, size=(64, 48)) as writer:
        for frame in frames:
            writer.write(frame)
    source = open_video(path)
    assert (source.width, source.height) == (64, 48)
    assert source.fps == pytest.approx(12.5 if suffix == ".mp4" else 10, rel=1e-3)
    decoded = list(source)
    assert len(decoded) == 10
    if source.num_frames is not None:
        assert source.num_frames == 10
    for original, back in zip(frames, decoded):
        assert back.shape == (48, 64, 3) and back.dtype == np.uint8
        assert np.abs(original.astype(int) - back.astype(int)).mean() < 12


def test_writer_pads_odd_sizes_and_checks_frame_shape(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, 25) as writer:
        for frame in _smooth_frames(3, 47, 63):
            writer.write(frame)
    assert (open_video(path).width, open_video(path).height) == (64, 48)
    with pytest.raises(InputError, match="expected 64x48"):
        with VideoWriter(tmp_path / "bad.mp4", 25, size=(64, 48)) as writer:
            writer.write(np.zeros((48, 60, 3), np.uint8))
    assert not (tmp_path / "bad.mp4").exists()


def test_writer_is_atomic_on_exception(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(target, 25) as writer:
            writer.write(_smooth_frames(1)[0])
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == [], "neither the target nor a temporary file may remain"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with VideoWriter(target, 25) as writer:
            writer.write(_smooth_frames(1)[0])
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"previous"


def test_natural_sort_order_of_frame_folder(tmp_path):
    for value, name in [(2, "frame2.png"), (10, "frame10.png"), (1, "frame1.png"), (3, "Frame03.png")]:
        Image.fromarray(np.full((8, 6, 3), value, np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    source = open_video(tmp_path)
    assert (source.num_frames, source.height, source.width, source.fps) == (4, 8, 6, 30.0)
    assert [int(f[0, 0, 0]) for f in source] == [1, 2, 3, 10]
    assert sorted(["f10", "f2", "f1"], key=natural_key) == ["f1", "f2", "f10"]
    source.fps = 24
    assert source.fps == 24.0
    with pytest.raises(DataError, match="fps"):
        source.fps = 0


def test_image_list_gray_and_rgba_become_rgb(tmp_path):
    gray, rgba = tmp_path / "b.png", tmp_path / "a.png"
    Image.fromarray(np.full((5, 7), 200, np.uint8), mode="L").save(gray)
    Image.fromarray(np.full((5, 7, 4), 100, np.uint8), mode="RGBA").save(rgba)
    source = open_video([gray, rgba], fps=5)
    frames = list(source)
    assert source.fps == 5 and [f.shape for f in frames] == [(5, 7, 3), (5, 7, 3)]
    assert frames[0][0, 0].tolist() == [200, 200, 200] and frames[1][0, 0].tolist() == [100, 100, 100]


def test_frames_are_streamed_not_preloaded(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "0.png")
    Image.fromarray(np.ones((4, 4, 3), np.uint8)).save(tmp_path / "1.png")
    source = open_video(tmp_path)
    iterator = iter(source)
    assert isinstance(iterator, types.GeneratorType)
    first = next(iterator)
    (tmp_path / "1.png").write_bytes(b"corrupted after open")
    assert first.max() == 0
    with pytest.raises(DataError, match="1.png"):
        next(iterator)


def test_mixed_frame_sizes_name_the_file(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "1.png")
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(tmp_path / "2.png")
    with pytest.raises(DataError, match=r"2\.png.*9x8"):
        open_video(tmp_path)


def _write_raw(path, frames, fmt_options=None):
    import av

    container = av.open(str(path), "w", options=fmt_options or {})
    stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


@pytest.mark.parametrize("suffix,codec", [(".mp4", "libx264"), (".mkv", "libx264"), (".mov", "libx264"),
                                          (".avi", "mpeg4"), (".webm", "libvpx")])
def test_each_container_reads_with_fps_frame_count_and_size(tmp_path, suffix, codec):
    """A 7-frame 64x48 clip at 12 fps written by PyAV in each container the docs list reads back
    with its rate, size and every frame (mkv and webm headers carry no frame count: None)."""
    import av

    if codec not in av.codecs_available:
        if suffix == ".webm":
            pytest.skip(f"{codec} is not in this FFmpeg build")
        codec = "mpeg4"
    frames = _smooth_frames(7)
    path = tmp_path / f"clip{suffix}"
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=12)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for frame in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
    container.close()
    source = open_video(path)
    assert (source.width, source.height, source.fps) == (64, 48, 12.0)
    assert source.num_frames == (None if suffix in (".mkv", ".webm") else 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file decodes without a truncation warning
        decoded = list(source)
    assert len(decoded) == 7 and all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in decoded)
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, decoded)) < 12


@pytest.mark.parametrize("suffix,options", [(".mp4", {"movflags": "faststart"}), (".mkv", None)])
def test_truncated_video_yields_what_decodes_then_warns(tmp_path, suffix, options):
    full = tmp_path / f"full{suffix}"
    _write_raw(full, _noisy_frames(20), options)
    cut = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    source = open_video(cut)
    if suffix == ".mkv":  # no frame count in a matroska header: nothing to compare against
        frames = list(source)
        assert 0 < len(frames) < 20
        return
    with pytest.warns(RuntimeWarning, match=r"cut\.mp4.*frame \d+"):
        frames = list(source)
    assert 0 < len(frames) < 20
    assert all(f.shape == (48, 64, 3) for f in frames)


def test_zero_byte_non_video_and_missing_files(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.mp4.*0 bytes"):
        open_video(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video " * 20)
    with pytest.raises(DataError, match=r"notes\.mp4 cannot be read as a video"):
        open_video(text)
    with pytest.raises(DataError, match=r"missing\.mp4 does not exist"):
        open_video(tmp_path / "missing.mp4")
    folder = tmp_path / "no_frames"
    folder.mkdir()
    with pytest.raises(DataError, match="zero frames"):
        open_video(folder)
    with pytest.raises(DataError, match="zero frames"):
        open_video([])


def test_video_with_zero_decodable_frames(tmp_path):
    full = tmp_path / "full.mkv"
    _write_raw(full, _noisy_frames(5))
    header_only = tmp_path / "header.mkv"
    header_only.write_bytes(full.read_bytes()[:300])
    try:
        source = open_video(header_only)
    except DataError as err:  # the container cannot even be opened: also a clear error
        assert "header.mkv" in str(err)
        return
    with pytest.raises(DataError, match=r"header\.mkv has zero decodable frames"):
        list(source)
