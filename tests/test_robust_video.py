"""Robustness of video input (``dvis.data.video.open_video``): damaged files, huge or odd frame
sizes, grayscale / RGBA, variable frame rate. Each case is either converted (uint8 RGB frames of
the header's size) or refused with a :class:`DataError` naming the file.

Basic cases (zero-byte, text file, missing file, truncated mp4/mkv, zero decodable frames, image
lists in gray / RGBA) are in ``test_data_video.py``; this file adds the hostile ones.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import warnings
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from dvis.data import video as video_module
from dvis.data.video import open_video
from dvis.data.writer import VideoWriter
from dvis.errors import DataError
from dvis.inference.transforms import resize_video
from dvis.modeling.dvis import DVIS
from test_model_io import tiny_config


def _noise(count: int, height: int, width: int, channels: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def _write_with_pyav(path: Path, codec: str, pix_fmt: str, frames: list[np.ndarray], pts=None, fmt=None) -> None:
    """Encode frames (gray (H, W), RGB or RGBA) with PyAV; ``pts`` in milliseconds (VFR)."""
    container = av.open(str(path), "w", format=fmt)
    stream = container.add_stream(codec, rate=None if pts else 25)
    stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
    if pts:
        stream.codec_context.time_base = Fraction(1, 1000)
    for index, frame in enumerate(frames):
        source = "gray" if frame.ndim == 2 else ("rgba" if frame.shape[2] == 4 else "rgb24")
        video_frame = av.VideoFrame.from_ndarray(frame, format=source)
        if pts:
            video_frame.pts, video_frame.time_base = pts[index], Fraction(1, 1000)
        for packet in stream.encode(video_frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def _read_all(path):
    """(source, frames, warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = open_video(path)
        frames = list(source)
    return source, frames, [str(w.message) for w in caught]


# ----------------------------------------------------------------------------- corrupted packets

_CORRUPTION_PROBE = """
import json, sys, warnings
import numpy as np
from dvis.data.video import open_video
from dvis.errors import DataError
clean, bad, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(clean, 'rb').read()
outcomes = []
for seed in range(count):
    rng = np.random.default_rng(seed)
    damaged = bytearray(data)
    middle = range(len(damaged) // 4, 3 * len(damaged) // 4)
    for where in rng.integers(middle.start, middle.stop, int(rng.integers(1, 40))):
        damaged[where] ^= int(rng.integers(1, 256))
    open(bad, 'wb').write(damaged)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            source = open_video(bad)
            frames = list(source)
        assert all(f.dtype == np.uint8 and f.shape == (source.height, source.width, 3) for f in frames)
        outcomes.append(['frames', len(frames), len(caught)])
    except DataError as err:
        assert bad in str(err), str(err)
        outcomes.append(['refused', 0, 0])
print(json.dumps(outcomes))
"""


def test_flipped_bytes_in_an_mp4_decode_with_a_warning_or_are_refused(tmp_path):
    """Random byte flips in the middle of a VideoWriter mp4 (child process: an FFmpeg crash or hang
    would fail the test instead of killing the run). Every outcome is frames of the right shape
    or a DataError; most damaged files also warn that the decoder flagged frames as corrupt."""
    clean = tmp_path / "clean.mp4"
    with VideoWriter(clean, fps=25) as writer:
        for frame in _noise(30, 64, 96):
            writer.write(frame)
    done = subprocess.run([sys.executable, "-c", _CORRUPTION_PROBE, str(clean), str(tmp_path / "bad.mp4"), "16"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(outcomes) == 16
    warned = [o for o in outcomes if o[0] == "frames" and o[2] > 0]
    assert len(warned) >= len(outcomes) // 2, outcomes


def test_clean_video_decodes_without_warnings(tmp_path):
    path = tmp_path / "clean.mp4"
    with VideoWriter(path, fps=25) as writer:
        for frame in _noise(12, 48, 64):
            writer.write(frame)
    _source, frames, messages = _read_all(path)
    assert len(frames) == 12 and messages == []


def test_header_only_and_garbage_tail_files(tmp_path):
    clean = tmp_path / "clean.mp4"
    with VideoWriter(clean, fps=25) as writer:
        for frame in _noise(10, 32, 32):
            writer.write(frame)
    data = clean.read_bytes()
    for name, content in {"head.mp4": data[:64], "random.mp4": np.random.default_rng(1).bytes(4096),
                          "png_named.mp4": b"\x89PNG\r\n\x1a\n" + b"\0" * 100}.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataError, match=name.replace(".", r"\.")):
            _read_all(path)


# ----------------------------------------------------------------------------- frame sizes


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (no pixel data): decoding would need TBs."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_huge_frame_headers_are_refused_before_decoding(tmp_path):
    big = tmp_path / "frames" / "000.png"
    big.parent.mkdir()
    _png_header(big, 10_000, 10_000)  # above our limit, below Pillow's decompression-bomb error
    with pytest.raises(DataError, match=r"000\.png: frames are 10000x10000 = 100000000 pixels, above the limit"):
        open_video(big.parent)
    with pytest.raises(DataError, match=r"000\.png: frames are 10000x10000"):
        video_module.read_image(big)
    _png_header(big, 200_000, 100_000)  # Pillow refuses it first: still a DataError naming the file
    with pytest.raises(DataError, match=r"000\.png cannot be read as an image: .*decompression bomb"):
        open_video(big.parent)


def test_video_file_above_the_pixel_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.mp4"
    with VideoWriter(path, fps=25) as writer:
        writer.write(_noise(1, 64, 96)[0])
    monkeypatch.setattr(video_module, "MAX_FRAME_PIXELS", 64 * 96 - 1)
    with pytest.raises(DataError, match=r"big\.mp4: frames are 96x64 = 6144 pixels, above the limit of 6143"):
        open_video(path)
    monkeypatch.setattr(video_module, "MAX_FRAME_PIXELS", 64 * 96)
    assert len(list(open_video(path))) == 1


@pytest.fixture(scope="module")
def tiny_model() -> DVIS:
    torch.manual_seed(0)
    return DVIS(tiny_config()).eval()


@pytest.mark.parametrize("height, width", [(1, 1), (17, 33), (1, 200), (45, 7), (63, 65)])
def test_odd_sizes_go_through_resize_and_the_model(tmp_path, tiny_model, height, width):
    """Frames of any size (not multiples of 32, 1 px, extreme aspect) are read, resized as the
    release does and segmented; masks come back at the original size."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(_noise(3, height, width)):
        Image.fromarray(frame).save(folder / f"{index}.png")
    source = open_video(folder)
    frames = list(source)
    assert [f.shape for f in frames] == [(height, width, 3)] * 3
    config = tiny_model.config.inference
    video = resize_video(frames, config.min_size_test, config.max_size_test)
    assert video.dtype == torch.uint8 and video.shape[:2] == (3, 3) and min(video.shape[-2:]) >= 1
    with torch.no_grad():
        result = tiny_model([video], output_sizes=[(height, width)])[0]
    assert result.masks.shape[-2:] == (height, width) and result.masks.shape[-3] == 3


@pytest.mark.parametrize("height, width", [(1, 1), (3, 5), (17, 33)])
def test_odd_sizes_in_a_video_file(tmp_path, height, width):
    """mp4 needs even sizes: the writer pads one edge pixel; the reader reports the stored size."""
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=25) as writer:
        for frame in _noise(4, height, width):
            writer.write(frame)
    source, frames, messages = _read_all(path)
    assert (source.height, source.width) == (height + height % 2, width + width % 2)
    assert len(frames) == 4 and messages == []


# ----------------------------------------------------------------------------- pixel formats


@pytest.mark.parametrize("codec, pix_fmt, channels, suffix", [
    ("ffv1", "gray", 1, ".mkv"),
    ("png", "rgba", 4, ".mov"),
    ("png", "gray", 1, ".mov"),
    ("ffv1", "yuv444p", 3, ".mkv"),
])
def test_gray_and_rgba_video_files_become_rgb(tmp_path, codec, pix_fmt, channels, suffix):
    frames_in = _noise(4, 24, 32, channels)
    path = tmp_path / f"video{suffix}"
    _write_with_pyav(path, codec, pix_fmt, frames_in)
    _source, frames, messages = _read_all(path)
    assert len(frames) == 4 and messages == []
    for original, frame in zip(frames_in, frames):
        assert frame.dtype == np.uint8 and frame.shape == (24, 32, 3)
        if channels == 1:  # lossless gray: every channel equals the gray value
            assert all(np.array_equal(frame[..., c], original) for c in range(3))
        elif pix_fmt == "rgba":  # lossless: alpha dropped, colour kept
            assert np.array_equal(frame, original[..., :3])


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "1", "CMYK"])
def test_image_modes_become_rgb(tmp_path, mode):
    rgb = _noise(1, 9, 11)[0]
    image = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("frame.tif" if mode in ("CMYK", "I;16") else "frame.png")
    image.save(path)
    frames = list(open_video([path]))
    assert frames[0].dtype == np.uint8 and frames[0].shape == (9, 11, 3)
    assert np.array_equal(frames[0], np.asarray(Image.open(path).convert("RGB")))


# ----------------------------------------------------------------------------- variable frame rate

VFR_PTS_MS = [0, 40, 50, 200, 210, 500, 900, 1000]  # intervals from 10 ms to 400 ms


@pytest.mark.parametrize("codec, suffix, fmt", [("mpeg4", ".mp4", "mp4"), ("libx264", ".mp4", "mp4"),
                                                ("png", ".mov", None)])
def test_variable_frame_rate_reads_every_frame_once(tmp_path, codec, suffix, fmt):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} is not in this FFmpeg build")
    frames_in = _noise(len(VFR_PTS_MS), 24, 32)
    path = tmp_path / f"vfr{suffix}"
    if codec == "mpeg4":  # mpeg4 needs a constant time base of 1/rate: 1 ms ticks
        container = av.open(str(path), "w", format=fmt)
        stream = container.add_stream(codec, rate=1000)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for pts, frame in zip(VFR_PTS_MS, frames_in):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    else:
        _write_with_pyav(path, codec, "rgb24" if codec == "png" else "yuv420p", frames_in, pts=VFR_PTS_MS, fmt=fmt)
    source, frames, messages = _read_all(path)
    assert len(frames) == len(VFR_PTS_MS) and messages == []  # no frame dropped or duplicated
    if codec == "png":  # lossless RGB: frames come back in presentation order, unchanged
        assert all(np.array_equal(a, b) for a, b in zip(frames, frames_in))
    # fps: the container's average rate, between the slowest (2.5) and fastest (100) instantaneous rate
    assert 2.5 <= source.fps <= 100.0, source.fps


def test_frames_that_disagree_with_the_header_are_refused(tmp_path):
    """A stream whose frames change size (here: a header that disagrees with the frames) is
    refused at the first such frame instead of yielding mixed shapes."""
    path = tmp_path / "v.mp4"
    with VideoWriter(path, fps=25) as writer:
        for frame in _noise(3, 32, 48):
            writer.write(frame)
    source = open_video(path)
    source.height = 30
    with pytest.raises(DataError, match=r"v\.mp4: frame 0 is 48x32 but the stream header says 48x30"):
        list(source)
