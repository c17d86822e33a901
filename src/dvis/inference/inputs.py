"""What ``dvis segment`` reads: video files, frame folders, folders of videos, YouTube-VIS JSON.

:func:`resolve_inputs` turns the command's INPUT arguments into :class:`VideoJob` s, one per video,
each with a unique name (output files are named after it) and the ``video_id`` its results carry
(the JSON's id for a YouTube-VIS annotation file, else the name).

Frame folders and frame lists are opened with :func:`open_frames`: like a truncated video file,
such a video ends at its first frame that cannot be decoded, with a warning naming the frame's
index and file (a frame whose header cannot be read fails on open, before any work).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dvis.data.video import IMAGE_EXTENSIONS, ImageSequence, VideoSource, frame_folder_paths, natural_key, open_video
from dvis.errors import DataError, InputError
from dvis.fileio import feed_file_sample, name_problem, refuse_url, shorten

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


@dataclass
class VideoJob:
    """One video to segment. ``source``: a path (file or frame folder) or a list of frame paths."""

    name: str
    video_id: Any
    source: Any

    def open(self) -> VideoSource:
        if isinstance(self.source, list):
            return UntilUnreadable(ImageSequence(self.source, name=self.name))
        return open_frames(self.source)

    def files(self) -> list[Path]:
        """The files the video is read from: its frames, or the one video file."""
        if isinstance(self.source, list):
            return [Path(p) for p in self.source]
        path = Path(self.source)
        return frame_folder_paths(path) if path.is_dir() else [path]

    def fingerprint(self) -> dict:
        """What the video's results were computed from, cheaply: its number of files and a sha256
        over each file's name, size and content (whole files up to 128 KiB, as frames are; the first
        and last 64 KiB of larger ones, such as video files). No modification times, so that ranks
        on machines with their own copies of the inputs agree."""
        files = self.files()
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path.name}\0{feed_file_sample(path, digest)}\n".encode("utf-8", "surrogateescape"))
        return {"files": len(files), "sha256": digest.hexdigest()}

    def frame_names(self, source: VideoSource, num_frames: int) -> list[str]:
        """Per-frame file names for per-frame outputs (PNG): the frame files' stems, else 00000, ..."""
        paths = getattr(source, "paths", None)
        if paths is not None and len(paths) >= num_frames:
            return [Path(p).stem for p in paths[:num_frames]]
        return [f"{t:05d}" for t in range(num_frames)]


class UntilUnreadable(VideoSource):
    """The frames of an :class:`ImageSequence` up to its first frame that does not decode.

    That frame's index and file are named in a ``RuntimeWarning`` (as :class:`VideoFile` does for
    a truncated video); a first frame that does not decode raises its ``DataError``.
    """

    def __init__(self, frames: ImageSequence) -> None:
        self.name, self.paths = frames.name, frames.paths
        super().__init__(frames.fps)
        self.height, self.width, self.num_frames = frames.height, frames.width, frames.num_frames
        self._frames = frames

    def __iter__(self) -> Iterator[np.ndarray]:
        decoded = iter(self._frames)
        for index, path in enumerate(self.paths):
            try:
                frame = next(decoded)
            except DataError as err:
                if index == 0:
                    raise
                warnings.warn(f"frames of {self.name!r}: frame {index} ({path}) cannot be decoded; kept the "
                              f"{index} frames before it ({err})", RuntimeWarning, stacklevel=2)
                return
            yield frame


def open_frames(source) -> VideoSource:
    """:func:`open_video`, but a frame folder or frame list ends at its first undecodable frame."""
    video = open_video(source)
    return UntilUnreadable(video) if type(video) is ImageSequence else video


@dataclass
class InputSet:
    jobs: list[VideoJob]
    categories: list[dict] | None = None  # from a YouTube-VIS JSON: [{id, name}, ...] sorted by id
    sources: list[str] = field(default_factory=list)


def resolve_inputs(inputs: list[str], frames_root: str | None = None) -> InputSet:
    if not inputs:
        raise InputError("no INPUT given: pass video files, frame folders, folders of videos or a YouTube-VIS JSON")
    for item in inputs:
        refuse_url(str(item))
    json_inputs = [p for p in inputs if Path(p).suffix.lower() == ".json"]
    if json_inputs:
        if len(inputs) != 1:
            raise InputError(f"a YouTube-VIS annotation file must be the only INPUT, got {inputs}")
        return _from_ytvis(Path(json_inputs[0]), frames_root)
    if frames_root is not None:
        raise InputError("--frames-root is only used with a YouTube-VIS annotation JSON input")
    jobs: list[VideoJob] = []
    for item in inputs:
        jobs.extend(_jobs_of(Path(item)))
    for job in jobs:
        check_output_name(job, f"input {job.source}")
    _check_unique(jobs)
    return InputSet(jobs, None, list(inputs))


def _jobs_of(path: Path) -> list[VideoJob]:
    if not path.exists():
        raise DataError(f"input {path} does not exist")
    if path.is_file():
        return [VideoJob(path.stem, path.stem, path)]
    if frame_folder_paths(path):
        return [VideoJob(path.name, path.name, path)]
    jobs = []
    for child in sorted(os.listdir(path), key=natural_key):
        child_path = path / child
        if child.startswith("."):
            continue
        if child_path.is_dir() and frame_folder_paths(child_path):
            jobs.append(VideoJob(child, child, child_path))
        elif child_path.is_file() and child_path.suffix.lower() in VIDEO_EXTENSIONS:
            jobs.append(VideoJob(child_path.stem, child_path.stem, child_path))
    if not jobs:
        raise DataError(f"folder {path} has zero frames ({', '.join(IMAGE_EXTENSIONS)}) and no sub-folders of "
                        f"frames or video files ({', '.join(VIDEO_EXTENSIONS)})")
    return jobs


def check_output_name(job: VideoJob, source: str) -> None:
    """A video's name becomes file names under --out (``<name>.mp4``, ``.partial/<name>.json``,
    ``pan_pred/<name>/``): refuse one that is a path, '.', '..', holds NUL or control characters,
    or is too long for a file name. (Refused, not rewritten: a rewritten name could collide with
    another video's and would no longer match the JSON.)"""
    problem = name_problem(job.name)
    if problem is not None:
        raise InputError(f"{source}: video name {shorten(job.name)} {problem}; output files are named after "
                         f"videos (OUT/<name>.mp4) and must stay inside --out: give the video a plain name")


def _check_unique(jobs: list[VideoJob]) -> None:
    seen: dict[str, VideoJob] = {}
    for job in jobs:
        if job.name in seen:
            raise InputError(f"two inputs have the video name {job.name!r} ({seen[job.name].source} and "
                             f"{job.source}); outputs are named after videos, so names must be unique")
        seen[job.name] = job


def _from_ytvis(path: Path, frames_root: str | None) -> InputSet:
    from dvis.data.ytvis import YTVISDataset

    root = Path(frames_root) if frames_root is not None else path.parent / "JPEGImages"
    if not root.is_dir():
        raise DataError(f"frames folder {root} for {path} does not exist (frames are read from JPEGImages/ "
                        f"beside the JSON, or from --frames-root)")
    dataset = YTVISDataset(path, root)
    jobs = []
    for index in range(len(dataset)):
        record = dataset[index]
        name = f"{record.name}" if record.name else str(record.video_id)
        jobs.append(VideoJob(name, record.video_id, [str(p) for p in record.file_names]))
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):  # fall back on ids, which are unique
        for job in jobs:
            job.name = str(job.video_id)
    for job in jobs:
        check_output_name(job, f"{path}: video {shorten(str(job.video_id))}")
    categories = sorted(({"id": c["id"], "name": str(c.get("name", c["id"]))} for c in dataset.categories),
                        key=lambda c: c["id"])
    return InputSet(jobs, categories, [str(path)])
