"""Atomic video writer: mp4 through PyAV (libx264, or mpeg4 when the bundled FFmpeg lacks it)
and GIF through Pillow. Frames go to a temporary file beside the target, which replaces the
target only when the writer closes without an exception; on an exception nothing is left. A
failed write (disk full) is an :class:`~dvis.errors.OutputWriteError` naming the target."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from dvis.errors import DataError, InputError
from dvis.fileio import new_temp_file, writing

MP4_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
GIF_SUFFIX = ".gif"


def mp4_codec() -> str:
    """The H.264 encoder if PyAV's FFmpeg has it, else MPEG-4 part 2."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """``with VideoWriter(path, fps, size) as w: w.write(frame)`` — ``size`` is (width, height)
    as in OpenCV and Pillow, or None to take it from the first frame. Frames are uint8 RGB
    (H, W, 3). For mp4 an odd width or height is padded by one edge pixel (yuv420p needs even
    sizes). GIF frames are palette-quantised and kept until close (GIFs are for short clips)."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int] | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix != GIF_SUFFIX and suffix not in MP4_SUFFIXES:
            raise InputError(f"video output {self.path}: unknown format {suffix!r}; use .mp4 or .gif")
        if not (fps > 0 and np.isfinite(fps)):
            raise InputError(f"video output {self.path}: fps must be positive, got {fps}")
        self.fps = float(fps)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.is_gif = suffix == GIF_SUFFIX
        self.frames_written = 0
        self._tmp: Path | None = None
        self._container = None
        self._stream = None
        self._gif_frames: list[Image.Image] = []

    def __enter__(self) -> "VideoWriter":
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.is_dir():
            raise DataError(f"video output {self.path}: folder {folder} does not exist")
        with writing(self.path, "video"):
            self._tmp = new_temp_file(self.path, suffix=self.path.suffix)  # the suffix tells FFmpeg the format
        return self

    def write(self, frame: np.ndarray) -> None:
        """Appends one uint8 RGB frame (H, W, 3)."""
        if self._tmp is None:
            raise RuntimeError("VideoWriter.write called outside its `with` block")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"video output {self.path}: frame must be uint8 (H, W, 3), "
                             f"got {frame.dtype} {frame.shape}")
        if self.size is None:
            self.size = (frame.shape[1], frame.shape[0])
        if frame.shape[:2] != (self.size[1], self.size[0]):
            raise InputError(f"video output {self.path}: frame {self.frames_written} is "
                             f"{frame.shape[1]}x{frame.shape[0]}, expected {self.size[0]}x{self.size[1]}")
        if self.is_gif:
            self._gif_frames.append(Image.fromarray(frame).quantize(colors=256, dither=Image.Dither.NONE))
        else:
            with writing(self.path, "video"):  # av.error.OSError (disk full) is an OSError
                self._write_video_frame(frame)
        self.frames_written += 1

    def _write_video_frame(self, frame: np.ndarray) -> None:
        if self._container is None:
            self._open_container()
        pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def _open_container(self) -> None:
        fmt = "mp4" if self.path.suffix.lower() in (".mp4", ".m4v") else None
        self._container = av.open(str(self._tmp), mode="w", format=fmt)
        stream = self._container.add_stream(mp4_codec(), rate=_rate(self.fps))
        stream.width = self.size[0] + self.size[0] % 2
        stream.height = self.size[1] + self.size[1] % 2
        stream.pix_fmt = "yuv420p"
        if stream.codec_context.name == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        self._stream = stream

    def _finish(self) -> None:
        if self.frames_written == 0:
            raise InputError(f"video output {self.path}: no frames were written")
        with writing(self.path, "video"):
            if self.is_gif:
                first, *rest = self._gif_frames
                duration = max(int(round(1000.0 / self.fps)), 10)
                first.save(self._tmp, format="GIF", save_all=True, append_images=rest, duration=duration, loop=0)
                self._gif_frames = []
            else:
                for packet in self._stream.encode():
                    self._container.mux(packet)
                self._container.close()
                self._container = None
            os.replace(self._tmp, self.path)
        self._tmp = None

    def _abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except av.FFmpegError:
                pass
            self._container = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self._finish()
        except BaseException:
            self._abort()
            raise
