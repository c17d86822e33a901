"""Result writers in the benchmark servers' formats; every file is written atomically
(:func:`dvis.fileio.atomic_write`).

* YouTube-VIS / OVIS: ``results.json`` = list of ``{video_id, category_id, score,
  segmentations}`` with one compressed RLE (string counts) or null per frame; zip it as
  ``results.json`` at the archive root for the CodaLab servers (:func:`zip_results`).
* VIPSeg: ``OUT/pan_pred/<video>/<frame>.png`` (RGB, id = R + 256 G + 65536 B, 0 = void) and
  ``OUT/pred.json`` = ``{"annotations": [{"video_id", "annotations": [{"segments_info",
  "file_name"}]}]}``, the layout ``eval_vpq_vspw.py`` / ``dvis eval-vpq`` read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from dvis.errors import DataError
from dvis.evaluation.rle import encode_masks
from dvis.fileio import atomic_write, atomic_write_json


# ----------------------------------------------------------------------------- YouTube-VIS


def ytvis_entries(video_id: Any, scores: np.ndarray, labels: np.ndarray, masks: np.ndarray) -> list[dict]:
    """One video's predictions -> results entries.

    scores (N,), labels (N,) dataset category ids, masks (N, T, H, W) bool.
    """
    masks = np.asarray(masks)
    if masks.ndim != 4 or len(masks) != len(scores) or len(labels) != len(scores):
        raise DataError(f"expected scores (N,), labels (N,), masks (N, T, H, W); got {np.shape(scores)}, "
                        f"{np.shape(labels)}, {masks.shape}")
    return [{"video_id": video_id, "category_id": int(label), "score": float(score),
             "segmentations": encode_masks(mask)}
            for score, label, mask in zip(scores, labels, masks)]


def write_ytvis_results(path: str | Path, entries: Iterable[dict]) -> Path:
    """Write a YouTube-VIS results.json (entries from :func:`ytvis_entries`)."""
    return atomic_write_json(path, list(entries))


def zip_results(results_json: str | Path, zip_path: str | Path) -> Path:
    """Zip ``results_json`` as ``results.json`` at the archive root (server submission)."""
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(results_json, arcname="results.json")

    return atomic_write(zip_path, write)


# ----------------------------------------------------------------------------- VIPSeg


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) panoptic ids < 2**24 -> (H, W, 3) uint8 RGB (R + 256 G + 65536 B)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 1 << 24):
        raise DataError(f"panoptic ids must lie in [0, 2**24), got range [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


class VIPSegWriter:
    """Collects videos, writes PNGs as it goes and ``pred.json`` on :meth:`close`."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.annotations: list[dict] = []

    def add_video(self, video_id: str, file_names: list[str], panoptic_ids: np.ndarray,
                  segments: list[dict]) -> None:
        """panoptic_ids (T, H, W) ints (0 = void); segments: ``{id, category_id[, isthing]}`` per id.

        Each frame's ``segments_info`` lists the segments present in that frame with their area.
        """
        panoptic_ids = np.asarray(panoptic_ids)
        if panoptic_ids.ndim != 3 or len(file_names) != len(panoptic_ids):
            raise DataError(f"video {video_id!r}: expected panoptic ids (T, H, W) with T = {len(file_names)} "
                            f"file names, got {panoptic_ids.shape}")
        by_id = {int(s["id"]): s for s in segments}
        frames = []
        for name, ids in zip(file_names, panoptic_ids):
            png_name = Path(name).with_suffix(".png").name
            frames.append({"segments_info": self._segments_info(video_id, name, ids, by_id),
                           "file_name": png_name})
            self._write_png(self.out_dir / "pan_pred" / video_id / png_name, ids)
        self.annotations.append({"video_id": video_id, "annotations": frames})

    @staticmethod
    def _segments_info(video_id: str, name: str, ids: np.ndarray, by_id: dict) -> list[dict]:
        present, counts = np.unique(ids, return_counts=True)
        info = []
        for seg_id, area in zip(present.tolist(), counts.tolist()):
            if seg_id == 0:
                continue
            if seg_id not in by_id:
                raise DataError(f"video {video_id!r} frame {name!r}: id {seg_id} has no entry in segments")
            seg = by_id[seg_id]
            info.append({"id": seg_id, "category_id": int(seg["category_id"]), "iscrowd": 0,
                         "isthing": int(seg.get("isthing", 0)), "area": int(area)})
        return info

    @staticmethod
    def _write_png(path: Path, ids: np.ndarray) -> None:
        rgb = ids_to_rgb(ids)
        atomic_write(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))

    def close(self) -> Path:
        """Write ``pred.json``; returns its path."""
        return atomic_write_json(self.out_dir / "pred.json", {"annotations": self.annotations})
