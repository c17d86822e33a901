"""Partial records of ``dvis segment``: one per finished video, ``OUT/.partial/<video>.json``.

A partial holds the video's results (``data``), the options they were computed with
(``options``: :func:`run_fingerprint`), what its input was (``source``: the number of frame files
and a sha256 of their names, sizes and contents, :meth:`VideoJob.fingerprint`), the files written
for the video (``outputs``, relative to OUT) and its overlay video (``overlay``: ``{"file",
"render_threshold"}``, or None under ``--no-render``). A rerun, or rank 0 when it merges, uses a
partial only when :meth:`Partials.problem` finds nothing wrong with it: same options, same input,
every recorded output still there, and the overlay the current options ask for rendered and
present.

The options identify the model by the sha256 of its files (config, weights, classes; not their
paths or modification times), so that ranks on machines with their own copies of the weights
agree, and a retrained model does not reuse old partials.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dvis.fileio import atomic_write_json
from dvis.inference.registry import ModelRef

PARTIAL_DIR = ".partial"
NO_PARTIAL = "no partial result"
COMPUTED_OPTIONS = ("mode", "task", "clip_len", "spill_dtype", "frames_root", "max_num", "score_threshold",
                    "one_class_per_track", "precision", "compile")  # compiled kernels reassociate float sums


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()  # (hashlib.file_digest needs Python 3.11; the package supports 3.10)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def run_fingerprint(options, ref: ModelRef) -> dict:
    """What a video's results depend on: the model (name unless a folder, sha256 of its files) and
    the options in :data:`COMPUTED_OPTIONS`. Hashes every model file once (call it once per run)."""
    files = {("weights" if path == ref.weights else path.name): file_sha256(path) for path in ref.files()}
    model = None if ref.kind == "folder" else ref.name
    return {"model": model, "model_files": files, **{key: getattr(options, key) for key in COMPUTED_OPTIONS}}


def differences(recorded: dict, current: dict) -> str:
    """Readable list of what differs between a partial's options and this run's."""
    parts = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key), current.get(key)
        if old == new:
            continue
        if key == "model_files" and isinstance(old, dict) and isinstance(new, dict):
            parts.extend(_file_differences(old, new))
        else:
            parts.append(f"{key} {old!r} (partial) vs {new!r} (this run)")
    return "; ".join(parts)


def source_problem(recorded, current: dict) -> str | None:
    """Why a partial's recorded input is not the video's input now (None: it is)."""
    if not isinstance(recorded, dict):
        return "its partial does not record its input (older format)"
    if recorded.get("files") != current["files"]:
        return (f"its input changed: {current['files']} frame file(s) now, {recorded.get('files')} when the "
                f"partial was made")
    if recorded.get("sha256") != current["sha256"]:
        return "its input changed: same number of files, other contents"
    return None


def _file_differences(old: dict, new: dict) -> list[str]:
    def short(digest) -> str:
        return "absent" if digest is None else f"sha256 {str(digest)[:12]}"

    return [f"{name} {short(old.get(name))} (partial) vs {short(new.get(name))} (this run)"
            for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]


class Partials:
    """The partial records of one output folder, checked against one run's options.

    ``render_threshold``: the overlay threshold this run renders with, None under ``--no-render``.
    """

    def __init__(self, out: Path, fingerprint: dict, render_threshold: float | None) -> None:
        self.out, self.folder = out, out / PARTIAL_DIR
        self.fingerprint, self.render_threshold = fingerprint, render_threshold

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def read(self, name: str) -> dict | None:
        try:
            return json.loads(self.path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write(self, name: str, record: dict) -> None:
        atomic_write_json(self.path(name), {"options": self.fingerprint, **record})

    def problem(self, name: str, source: dict) -> str | None:
        """Why the partial of video ``name`` cannot be used (None: it can); ``source``: the video's
        input now (:meth:`VideoJob.fingerprint`)."""
        if not self.path(name).is_file():
            return NO_PARTIAL
        partial = self.read(name)
        if not isinstance(partial, dict):
            return f"its partial {self.path(name)} cannot be read"
        if partial.get("options") != self.fingerprint:
            return f"it was made with other options: {differences(partial.get('options') or {}, self.fingerprint)}"
        return source_problem(partial.get("source"), source) or self._missing_output(partial) or \
            self._overlay_problem(partial, name)

    def _missing_output(self, partial: dict) -> str | None:
        outputs = partial.get("outputs")
        if not isinstance(outputs, list):
            return "its partial records no output files (older format)"
        missing = [output for output in outputs if not (self.out / output).is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            return f"its output {missing[0]}{more} is missing"
        return None

    def _overlay_problem(self, partial: dict, name: str) -> str | None:
        if self.render_threshold is None:
            return None
        overlay = partial.get("overlay")
        if not isinstance(overlay, dict):
            return f"its overlay {name}.mp4 was not rendered (the run had --no-render)"
        if partial.get("task") == "vis" and overlay.get("render_threshold") != self.render_threshold:
            return (f"its overlay was rendered with --render-threshold {overlay.get('render_threshold')}, "
                    f"not {self.render_threshold}")
        if not (self.out / str(overlay.get("file"))).is_file():
            return f"its overlay {overlay.get('file')} is missing"
        return None
