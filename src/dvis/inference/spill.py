"""Per-frame arrays spilled to a file on disk, so that long videos do not grow host memory.

A :class:`FrameSpill` holds T frames of one fixed shape, appended in order and read back by frame
range (a :class:`dvis.modeling.pipeline.FrameStore`; a :class:`SpillFolder` is the pipeline's
``StoreFolder`` on disk). Reads and writes go through ``os.pread``/``os.pwrite`` rather than a
memory map: pages of a mapped file count towards the process's resident set while they are
mapped, plain reads do not.

A failed write (disk full) is an :class:`~dvis.errors.OutputWriteError` naming the spill file; the
folder is removed when its ``with`` block ends, also on SIGTERM (the ``dvis`` command turns SIGTERM
into an exception). A folder left by a process that was killed outright (SIGKILL, power loss) is
removed by the next :class:`SpillFolder` created in the same parent folder on the same host: its
name, ``dvis-spill-<host>-<pid>-<random>``, says which process made it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dvis.errors import InputError, OutputWriteError

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
        data = memoryview(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
        offset = self.num_frames * self.frame_bytes
        try:
            while data:  # a nearly full disk can take part of a write and refuse the rest
                written = os.pwrite(self._fd, data, offset)
                data, offset = data[written:], offset + written
        except OSError as err:
            raise OutputWriteError(f"cannot write the spill file {self.path}: {err.strerror or err} (per-frame "
                                   f"arrays of the video being processed; free space there or choose another "
                                   f"folder with --spill-dir / spill_dir)") from None
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


SPILL_PREFIX = "dvis-spill-"
_OWNER = re.compile(re.escape(SPILL_PREFIX) + r"(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale_spills(parent: str | os.PathLike) -> list[Path]:
    """Remove the spill folders in ``parent`` made on this host by processes that no longer run;
    returns them. Folders of other hosts (a shared spill folder) and of live processes are kept."""
    removed = []
    host = socket.gethostname()
    for entry in Path(parent).glob(f"{SPILL_PREFIX}*"):
        owner = _OWNER.fullmatch(entry.name)
        if owner is None or owner["host"] != host or _alive(int(owner["pid"])) or not entry.is_dir():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


class SpillFolder:
    """A temporary folder holding named :class:`FrameSpill` files; removed on :meth:`close`.

    Creating one first removes the stale spill folders of dead processes (:func:`sweep_stale_spills`).
    """

    def __init__(self, parent: str | os.PathLike | None = None, dtype: str = "float32") -> None:
        if dtype not in SPILL_DTYPES:
            raise InputError(f"spill dtype must be one of {sorted(SPILL_DTYPES)}, got {dtype!r}")
        self.dtype = SPILL_DTYPES[dtype]
        parent = tempfile.gettempdir() if parent is None else parent
        sweep_stale_spills(parent)
        prefix = f"{SPILL_PREFIX}{socket.gethostname()}-{os.getpid()}-"
        try:
            self._tmp = tempfile.TemporaryDirectory(prefix=prefix, dir=parent)
        except OSError as err:
            raise OutputWriteError(f"cannot create a spill folder in {parent}: {err.strerror or err}") from None
        self.path = Path(self._tmp.name)
        self.spills: dict[str, FrameSpill] = {}

    def get(self, name: str, frame_shape: tuple[int, ...], exact: bool = False) -> FrameSpill:
        """The spill called ``name``, created on first use. ``exact`` stores float32 whatever the dtype."""
        if name not in self.spills:
            dtype = np.float32 if exact else self.dtype
            self.spills[name] = FrameSpill(self.path / f"{name}.bin", frame_shape, dtype)
        return self.spills[name]

    def __getitem__(self, name: str) -> FrameSpill:
        """The spill called ``name``, already created (KeyError otherwise)."""
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
