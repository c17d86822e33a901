"""Atomic output files, the one way this package writes a file it may replace; JSON input files.

:func:`atomic_write` creates a hidden temporary file beside the target (``.NAME.<random>.tmp``),
lets the caller fill it, flushes it to disk and moves it over the target with ``os.replace``: the
target is either the previous version or the complete new one, never half-written. The temporary
file is created with ``os.open(..., 0o666)``, so it gets the mode the umask gives (0644 under
umask 022), as a file written with ``open()`` would; ``tempfile.mkstemp`` would make it 0600.
A failed write (disk full, no permission, file too large) removes the temporary file and raises
:class:`~dvis.errors.OutputWriteError` naming the target.

:func:`read_json` reads a JSON file a user gives; whatever is wrong with it (missing, a folder,
not UTF-8, not JSON, nested too deep for the parser, integers of more than 4300 digits) is a
:class:`~dvis.errors.DataError` naming the file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from dvis.errors import DataError, OutputWriteError

__all__ = ["OutputWriteError", "atomic_write", "atomic_write_bytes", "atomic_write_json", "feed_file_sample",
           "make_dir_beside", "name_problem", "new_temp_file", "read_json", "refuse_url", "relative_path_problem",
           "shorten", "write_error", "writing"]


def write_error(path: str | os.PathLike, err: BaseException, what: str | None = None) -> OutputWriteError:
    """``cannot write [the WHAT ]PATH: REASON; the previous version (if any) is unchanged``."""
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    label = f"the {what} {path}" if what else str(path)
    return OutputWriteError(f"cannot write {label}: {reason}; the previous version (if any) is unchanged")


@contextmanager
def writing(path: str | os.PathLike, what: str | None = None):
    """Turn an OSError raised inside the block into an :class:`OutputWriteError` naming ``path``."""
    try:
        yield
    except OutputWriteError:
        raise
    except OSError as err:
        raise write_error(path, err, what) from None


def _temp_name(path: Path, suffix: str) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"


def new_temp_file(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """Create an empty hidden file beside ``path`` with the umask's mode; returns its path."""
    path = Path(path)
    while True:
        tmp = _temp_name(path, suffix)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _keep_mode(tmp: Path, mode: int) -> None:
    """Some writers replace the file they are given by one of their own (safetensors makes it
    0600); give it back the mode it was created with."""
    if stat.S_IMODE(tmp.stat().st_mode) != mode:
        os.chmod(tmp, mode)


def make_dir_beside(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """Create an empty hidden folder beside ``path`` with the umask's mode; returns its path."""
    path = Path(path)
    while True:
        tmp = _temp_name(path, suffix)
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], what: str | None = None) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then move it over ``path``.

    The parent folder is created if needed. On any exception the temporary file is removed and
    ``path`` is unchanged; an ``OSError`` becomes an :class:`OutputWriteError` naming ``path``
    (``what`` describes it: "training checkpoint" -> "cannot write the training checkpoint PATH").
    """
    path = Path(path)
    with writing(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temp_file(path)
        mode = stat.S_IMODE(tmp.stat().st_mode)
    try:
        with writing(path, what):
            write(tmp)
            _keep_mode(tmp, mode)
            _fsync(tmp)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, what: str | None = None) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), what)


def atomic_write_json(path: str | os.PathLike, obj: Any, what: str | None = None) -> Path:
    """:func:`atomic_write` of ``obj`` as compact UTF-8 JSON."""
    return atomic_write_bytes(path, json.dumps(obj).encode("utf-8"), what)


URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def refuse_url(text: str, what: str = "input") -> None:
    """DataError for a URL given where a local path is expected (a Path would mangle ``//``)."""
    if URL.match(text):
        raise DataError(f"{what} {text}: URLs are not supported; download the file and pass its local path")


MAX_NAME_BYTES = 200  # a video name + ".mp4" + an atomic write's ".NAME.<8 hex>.tmp" stays under 255 bytes


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one file or folder name inside an output folder (None: it can)."""
    if not name:
        return "is empty"
    if "\0" in name:
        return "holds a NUL byte"
    if name in (".", ".."):
        return f"is {name!r}"
    if "/" in name or "\\" in name:
        return "holds a '/' or '\\' (a path, not a name)"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "holds a control character"
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long (at most {MAX_NAME_BYTES})"
    return None


def relative_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a path inside its root folder (None: it can)."""
    if not path:
        return "is empty"
    if "\0" in path:
        return "holds a NUL byte"
    if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[/\\]", path):
        return "is an absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "climbs out of its folder with '..'"
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in parts):
        return "has a part longer than 255 bytes"
    return None


def shorten(text: str, limit: int = 60) -> str:
    """``repr(text)``, cut to about ``limit`` characters for one-line messages."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def read_json(path: str | os.PathLike, what: str | None = None) -> Any:
    """The contents of the JSON file ``path``; :class:`DataError` "[WHAT ]PATH ..." saying what is
    wrong with it otherwise."""
    label = f"{what} {os.fspath(path)}" if what else os.fspath(path)
    refuse_url(os.fspath(path), what or "file")
    try:
        with Path(path).open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{label} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{label} is a folder; expected a JSON file") from None
    except OSError as err:
        raise DataError(f"{label} cannot be read: {err.strerror or err}") from None
    except RecursionError:
        raise DataError(f"{label} is nested too deeply (lists or objects more than about "
                        f"{sys.getrecursionlimit()} levels deep)") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, integers over 4300 digits
        raise DataError(f"{label} is not valid JSON: {err}") from None


SAMPLE_BYTES = 64 * 1024


def feed_file_sample(path: Path, digest) -> int:
    """Feeds ``digest`` the file's content (or its first and last SAMPLE_BYTES); returns its size
    (-1 for a file that cannot be read). Identifies frames and video files cheaply, without
    modification times, so that copies of the same inputs agree."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            digest.update(handle.read(SAMPLE_BYTES))
            if size > SAMPLE_BYTES:
                handle.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
                digest.update(handle.read(SAMPLE_BYTES))
    except OSError:
        return -1  # a missing frame changes the fingerprint; opening the video says why
    return size
