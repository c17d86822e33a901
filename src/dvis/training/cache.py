"""Cache of the frozen segmenter's outputs, computed once per (video, frame).

The decoupling dividend (issue 5): the tracker and refiner stages never change the segmenter,
and the segmenter sees every frame independently, so when clips are not augmented (no random
resize, crop or flip: ``data.augmentation: null``) its outputs for frame t of video v are the
same in every epoch. They are computed once, stored on disk, and looked up by
(video index, frame index).

Layout: ``DIR/manifest.json`` (a fingerprint of the segmenter weights, the dataset and the
dtype; a mismatch, or a manifest that cannot be read, rebuilds the cache) and one
``DIR/video_000012.safetensors`` per video holding ``pred_embds`` (L, Q, C) and ``pred_logits``
(L, Q, K+1) in float32, ``mask_features`` (L, C_mask, h, w) and ``pred_masks`` (L, Q, h, w) in the
cache dtype (float16 halves the disk size; float32 reproduces the uncached run up to float
rounding, since the segmenter then runs on another number of frames per call). Files are written
atomically; building is resumable and split over processes (video i is built by rank i mod world
size). A failed write (disk full) is an :class:`OutputWriteError` naming the file; a damaged video
file is a :class:`DataError` naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from dvis.errors import DataError
from dvis.fileio import atomic_write, writing
from dvis.modeling.io import save_safetensors

FIELDS = ("pred_embds", "pred_logits", "mask_features", "pred_masks")
LOW_PRECISION = ("mask_features", "pred_masks")
CACHE_VERSION = 1


def fingerprint(segmenter: torch.nn.Module, dataset_files: list[Path], dtype: str,
                image_roots: list[Path] = ()) -> str:
    """sha256 over the segmenter's weights, the dataset files' contents, the relative names and
    byte sizes of the files under ``image_roots`` (the frames) and the dtype.

    Independent of where the dataset lies and of its timestamps, so that the same data in another
    folder (a git worktree, a copy, the same synthetic pool generated again) reuses the cache. The
    frames are only listed (one ``stat`` each, cheap at every training start even for tens of
    thousands of frames), not read: a frame rewritten with other pixels but the same byte size is
    not noticed; delete the cache folder after such an edit.
    """
    digest = hashlib.sha256(f"v{CACHE_VERSION}:{dtype}".encode())
    for name, tensor in sorted(segmenter.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for path in dataset_files:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    for root in image_roots:
        for parts, size in sorted(_file_sizes(Path(root))):
            digest.update(f"{'/'.join(parts)}\0{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _file_sizes(root: Path) -> list[tuple[tuple[str, ...], int]]:
    """(relative path parts, byte size) of every file under ``root``: one ``os.scandir`` walk, one
    ``stat`` per file. Like ``Path.rglob``, it does not descend into symlinked folders; sorting the
    parts tuples gives ``rglob``'s ``sorted`` order, so the key is the one earlier versions wrote."""
    found, folders = [], [(root, ())]
    while folders:
        folder, prefix = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                parts = (*prefix, entry.name)
                if entry.is_dir() and not entry.is_symlink():
                    folders.append((entry.path, parts))
                elif entry.is_file():
                    found.append((parts, entry.stat().st_size))
    return found


class SegmenterCache:
    def __init__(self, directory: str | Path, key: str, dtype: str = "float16", keep_in_memory: int = 64) -> None:
        self.directory = Path(directory)
        self.key = key
        self.dtype = {"float16": torch.float16, "float32": torch.float32}[dtype]
        self._memory: OrderedDict[int, dict[str, Tensor]] = OrderedDict()
        self._capacity = keep_in_memory

    # ------------------------------------------------------------------------------- building
    def video_path(self, video_index: int) -> Path:
        return self.directory / f"video_{video_index:06d}.safetensors"

    def prepare(self) -> None:
        """Create the folder; drop stale video files when the manifest's fingerprint differs or the
        manifest cannot be read."""
        manifest = self.directory / "manifest.json"
        if read_manifest(manifest).get("key") == self.key:
            return
        with writing(manifest, "segmenter cache manifest"):
            self.directory.mkdir(parents=True, exist_ok=True)
            for stale in self.directory.glob("video_*.safetensors"):
                stale.unlink()
            text = json.dumps({"key": self.key, "version": CACHE_VERSION}, indent=1)
            atomic_write(manifest, lambda p: p.write_text(text), "segmenter cache manifest")

    @torch.no_grad()
    def build(self, segmenter, videos, rank: int = 0, world_size: int = 1, frames_per_call: int = 8,
              progress=None) -> int:
        """Compute the missing video files of this rank; returns how many were computed."""
        device = next(segmenter.parameters()).device
        built = 0
        for index in range(rank, len(videos), world_size):
            if self.video_path(index).is_file():
                continue
            self._build_video(segmenter, videos[index], index, device, frames_per_call)
            built += 1
            if progress is not None:
                progress.update(world_size)
        return built

    def _build_video(self, segmenter, video, index: int, device, frames_per_call: int) -> None:
        outputs: dict[str, list[Tensor]] = {name: [] for name in FIELDS}
        for start in range(0, video.length, frames_per_call):
            frames = np.stack([video.load_frame(t) for t in range(start, min(video.length, start + frames_per_call))])
            pixel_values, _ = segmenter.preprocess(torch.from_numpy(frames).permute(0, 3, 1, 2).to(device))
            out = segmenter(pixel_values)
            for name in FIELDS:
                value = getattr(out, name).float().cpu()
                outputs[name].append(value.to(self.dtype) if name in LOW_PRECISION else value)
        tensors = {name: torch.cat(values).contiguous() for name, values in outputs.items()}
        atomic_write(self.video_path(index), lambda p: save_safetensors(tensors, p, {"key": self.key}),
                     "segmenter cache file")

    # -------------------------------------------------------------------------------- reading
    def _video(self, video_index: int) -> dict[str, Tensor]:
        if video_index in self._memory:
            self._memory.move_to_end(video_index)
            return self._memory[video_index]
        path = self.video_path(video_index)
        if not path.is_file():
            raise DataError(f"segmenter cache {self.directory}: no entry for video {video_index} ({path.name}); "
                            "build the cache first")
        tensors = _read_video(path, self.directory)
        self._memory[video_index] = tensors
        if len(self._memory) > self._capacity:
            self._memory.popitem(last=False)
        return tensors

    def lookup(self, video_index: int, frame_indices: Tensor) -> dict[str, Tensor]:
        """Outputs of frames ``frame_indices`` (T,) of a video, float32: pred_embds (T, Q, C),
        pred_logits (T, Q, K+1), mask_features (T, C_mask, h, w), pred_masks (T, Q, h, w)."""
        tensors = self._video(int(video_index))
        index = torch.as_tensor(frame_indices, dtype=torch.int64)
        return {name: tensors[name].index_select(0, index).float() for name in FIELDS}


def read_manifest(path: Path) -> dict:
    """The manifest's contents; {} (= stale: rebuild) when it is missing, unreadable or not a JSON object."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return values if isinstance(values, dict) else {}


def _read_video(path: Path, directory: Path) -> dict[str, Tensor]:
    def damaged(reason: str) -> DataError:
        return DataError(f"segmenter cache {directory}: {path.name} is damaged: {reason}; delete the file "
                         "(or the folder) and restart: missing entries are rebuilt")

    try:
        tensors = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise damaged(f"not a readable safetensors file ({err})") from None
    missing = [name for name in FIELDS if name not in tensors]
    if missing:
        raise damaged(f"no {', '.join(missing)}")
    return tensors
