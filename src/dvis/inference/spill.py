"""Per-frame arrays spilled to a file on disk, so that long videos do not grow host memory.

A :class:`FrameSpill` holds T frames of one fixed shape, appended in order and read back by frame
range. Reads and writes go through ``os.pread``/``os.pwrite`` rather than a memory map: pages of a
mapped file count towards the process's resident set while they are mapped, plain reads do not.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dvis.errors import InputError

SPILL_DTYPES = {"float32": np.float32, "float16": np.float16}


class FrameSpill:
    """A file of frames, each an array of ``frame_shape`` stored as ``dtype``."""

    def __init__(self, path: Path, frame_shape: tuple[int, ...], dtype=np.float32) -> None:
        self.path = Path(path)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.dtype = np.dtype(dtype)
        self.frame_bytes = int(np.prod(self.frame_shape)) * self.dtype.itemsize
        self.num_frames = 0
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def append(self, frames: Tensor | np.ndarray) -> None:
        """frames (t, *frame_shape) -> written after the frames already held."""
        array = frames.detach().cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
        if tuple(array.shape[1:]) != self.frame_shape:
            raise InputError(f"spill {self.path.name}: expected frames (t, {self.frame_shape}), got {array.shape}")
        data = np.ascontiguousarray(array, dtype=self.dtype).tobytes()
        os.pwrite(self._fd, data, self.num_frames * self.frame_bytes)
        self.num_frames += len(array)

    def read(self, start: int, stop: int) -> Tensor:
        """Frames [start, stop) -> (t, *frame_shape) float32 tensor."""
        start, stop = max(0, start), min(stop, self.num_frames)
        size = (stop - start) * self.frame_bytes
        data = os.pread(self._fd, size, start * self.frame_bytes) if size > 0 else b""
        array = np.frombuffer(data, dtype=self.dtype).reshape(stop - start, *self.frame_shape)
        return torch.from_numpy(array.astype(np.float32))

    def read_all(self) -> Tensor:
        return self.read(0, self.num_frames)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.path.unlink(missing_ok=True)


class SpillFolder:
    """A temporary folder holding named :class:`FrameSpill` files; removed on :meth:`close`."""

    def __init__(self, parent: str | os.PathLike | None = None, dtype: str = "float32") -> None:
        if dtype not in SPILL_DTYPES:
            raise InputError(f"spill dtype must be one of {sorted(SPILL_DTYPES)}, got {dtype!r}")
        self.dtype = SPILL_DTYPES[dtype]
        self._tmp = tempfile.TemporaryDirectory(prefix="dvis-spill-", dir=parent)
        self.path = Path(self._tmp.name)
        self.spills: dict[str, FrameSpill] = {}

    def get(self, name: str, frame_shape: tuple[int, ...], exact: bool = False) -> FrameSpill:
        """The spill called ``name``, created on first use. ``exact`` stores float32 whatever the dtype."""
        if name not in self.spills:
            dtype = np.float32 if exact else self.dtype
            self.spills[name] = FrameSpill(self.path / f"{name}.bin", frame_shape, dtype)
        return self.spills[name]

    def close(self) -> None:
        for spill in self.spills.values():
            spill.close()
        self.spills.clear()
        self._tmp.cleanup()

    def __enter__(self) -> "SpillFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
