"""Small file-system helpers for atomic output (temporary file or folder, then os.replace)."""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_mode(path: str | os.PathLike) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; give the usual default permissions
    (0666/0777 minus the umask) before the entry replaces its final name."""
    path = Path(path)
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~_umask())
