"""Video input: video files (PyAV), folders of frames (natural sort) and lists of image paths.

:func:`open_video` returns a :class:`VideoSource`; iterating it yields frames one at a time as
uint8 RGB arrays (H, W, 3) and never holds the whole video. ``fps``, ``height`` and ``width`` are
kept so that results can be written back at the source frame rate (see :mod:`dvis.data.writer`).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from dvis.data.writer import VideoWriter  # noqa: F401  (re-exported: dvis.data.video.VideoWriter)
from dvis.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_FOLDER_FPS = 30.0
# Frames larger than this are refused from the header, before any pixel is decoded (8192 x 8192:
# above DCI 8K; the model works at ~360-720 px anyway). Raise it here if you really need more.
MAX_FRAME_PIXELS = 8192 * 8192

__all__ = ["open_video", "VideoSource", "VideoFile", "ImageSequence", "natural_key", "read_image",
           "VideoWriter", "IMAGE_EXTENSIONS"]


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10`` (digit runs compare as numbers)."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name)]


def check_frame_size(source, height: int, width: int) -> None:
    """Refuse frames above :data:`MAX_FRAME_PIXELS` (checked from headers, before decoding)."""
    if height * width > MAX_FRAME_PIXELS:
        raise DataError(f"{source}: frames are {width}x{height} = {height * width} pixels, above the limit "
                        f"of {MAX_FRAME_PIXELS} (dvis.data.video.MAX_FRAME_PIXELS); downscale the input first")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads one image as uint8 RGB (H, W, 3); grayscale, palette and RGBA are converted."""
    try:
        with Image.open(path) as image:
            check_frame_size(f"image file {path}", image.height, image.width)
            return np.array(image.convert("RGB"))
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"image file {path} cannot be read as an image: {err}") from None


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"image file {path} cannot be read as an image: {err}") from None
    check_frame_size(f"image file {path}", height, width)
    return height, width


class VideoSource:
    """A video as a stream of frames. Subclasses set ``name``, ``height``, ``width``,
    ``num_frames`` (None when unknown) and implement ``__iter__``."""

    name: str
    height: int
    width: int
    num_frames: int | None

    def __init__(self, fps: float):
        self.fps = fps

    @property
    def fps(self) -> float:
        return self._fps

    @fps.setter
    def fps(self, value: float) -> None:
        value = float(value)
        if not np.isfinite(value) or value <= 0:
            raise DataError(f"fps of {self.name!r} must be a positive number, got {value}")
        self._fps = value

    def __iter__(self) -> Iterator[np.ndarray]:  # (H, W, 3) uint8 RGB frames
        raise NotImplementedError

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError(f"the frame count of {self.name!r} is not known before decoding")
        return self.num_frames

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, {self.width}x{self.height}, "
                f"fps={self.fps:g}, num_frames={self.num_frames})")


class ImageSequence(VideoSource):
    """Frames stored as image files, in the given order. All headers are checked on open, so a
    frame of another size fails early with the file named."""

    def __init__(self, paths: Sequence[str | os.PathLike], name: str, fps: float = DEFAULT_FOLDER_FPS):
        self.name = name
        super().__init__(fps)
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise DataError(f"video {name!r} has zero frames (no image files)")
        self.height, self.width = _image_size(self.paths[0])
        for path in self.paths[1:]:
            size = _image_size(path)
            if size != (self.height, self.width):
                raise DataError(
                    f"frame {path} is {size[1]}x{size[0]} but the first frame {self.paths[0]} is "
                    f"{self.width}x{self.height}; all frames of a video must have one size"
                )
        self.num_frames = len(self.paths)

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.paths:
            frame = read_image(path)
            if frame.shape[:2] != (self.height, self.width):
                raise DataError(f"frame {path} changed size to {frame.shape[1]}x{frame.shape[0]} "
                                f"(expected {self.width}x{self.height})")
            yield frame


def frame_folder_paths(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder (by extension), in natural order."""
    folder = Path(folder)
    names = [n for n in os.listdir(folder) if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    return [folder / n for n in sorted(names, key=natural_key)]


class VideoFile(VideoSource):
    """A video file decoded by PyAV (mp4, avi, mov, webm, mkv, ...)."""

    def __init__(self, path: str | os.PathLike, fps: float | None = None):
        self.path = Path(path)
        self.name = self.path.stem
        container = _open_container(self.path)
        try:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.height = int(stream.codec_context.height)
            self.width = int(stream.codec_context.width)
            self.num_frames = int(stream.frames) or None
        finally:
            container.close()
        if self.height <= 0 or self.width <= 0:
            raise DataError(f"video file {self.path} has no frame size in its header")
        check_frame_size(f"video file {self.path}", self.height, self.width)
        super().__init__(fps if fps is not None else (float(rate) if rate else DEFAULT_FOLDER_FPS))

    def __iter__(self) -> Iterator[np.ndarray]:
        container = _open_container(self.path)
        decoded = 0
        concealed = []  # frames the decoder flagged as corrupt (errors concealed, may show artifacts)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if frame.is_corrupt:
                        concealed.append(decoded)
                    self._check_frame(frame, decoded)
                    yield frame.to_ndarray(format="rgb24")
                    decoded += 1
        except av.FFmpegError as err:
            _warn(f"video file {self.path}: decoding failed at frame {decoded} ({err}); "
                  f"kept the {decoded} frames before it")
        finally:
            container.close()
        if concealed:
            _warn(f"video file {self.path}: the decoder flagged {len(concealed)} frame(s) between "
                  f"{concealed[0]} and {concealed[-1]} as corrupt (damaged data, errors concealed); "
                  f"they may show artifacts")
        if decoded == 0:
            raise DataError(f"video file {self.path} has zero decodable frames")
        if self.num_frames is not None and decoded < self.num_frames:
            _warn(f"video file {self.path}: frame {decoded} could not be decoded; got {decoded} of the "
                  f"{self.num_frames} frames its header announces (truncated file?)")


    def _check_frame(self, frame, index: int) -> None:
        if (frame.height, frame.width) != (self.height, self.width):
            raise DataError(f"video file {self.path}: frame {index} is {frame.width}x{frame.height} but the "
                            f"stream header says {self.width}x{self.height} (size changes mid-stream are "
                            f"not supported)")


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _open_container(path: Path):
    if not path.exists():
        raise DataError(f"video file {path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"video file {path} is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be read as a video: {err}") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path} has no video stream")
    return container


def open_video(source, fps: float | None = None) -> VideoSource:
    """Opens ``source``: a video file, a folder of frames (natural sort) or a list of image paths.

    ``fps`` overrides the frame rate (default: the file's rate; 30 for frames and image lists).
    """
    if isinstance(source, VideoSource):
        if fps is not None:
            source.fps = fps
        return source
    if isinstance(source, (list, tuple)):
        name = Path(source[0]).parent.name if source else "images"
        return ImageSequence(source, name=name or "images", fps=fps or DEFAULT_FOLDER_FPS)
    path = Path(source)
    if path.is_dir():
        paths = frame_folder_paths(path)
        if not paths:
            raise DataError(f"folder {path} has zero frames: no files ending in {', '.join(IMAGE_EXTENSIONS)}")
        return ImageSequence(paths, name=path.name, fps=fps or DEFAULT_FOLDER_FPS)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSequence([path], name=path.stem, fps=fps or DEFAULT_FOLDER_FPS)
    return VideoFile(path, fps=fps)
