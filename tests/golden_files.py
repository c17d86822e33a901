"""Collect bundled golden files plus every file of the same format under an env var path."""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path(__file__).parent / "data"


def golden_files(bundled: list[Path], env_var: str, pattern: str = "*.pt") -> list[Path]:
    """Bundled files, then every file matching ``pattern`` under ``$env_var`` (file or folder).

    A set variable that points at nothing is an error, never a silent skip.
    """
    files = list(bundled)
    extra = os.environ.get(env_var)
    if extra:
        path = Path(extra)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(path.rglob(pattern))
            if not found:
                raise FileNotFoundError(f"{env_var}={extra} holds no {pattern} files")
            files.extend(found)
        else:
            raise FileNotFoundError(f"{env_var}={extra} does not exist")
    return files


def ids(files: list[Path]) -> list[str]:
    return [str(f.relative_to(DATA)) if f.is_relative_to(DATA) else str(f) for f in files]
