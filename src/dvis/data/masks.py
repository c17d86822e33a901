"""Segmentation decoding (pycocotools): polygons, uncompressed RLE, compressed RLE, null."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def to_rle(segmentation, height: int, width: int) -> dict | None:
    """Compressed RLE (``counts`` as bytes) of any COCO segmentation; None for null."""
    if segmentation is None:
        return None
    if isinstance(segmentation, list):  # polygons: list of [x0, y0, x1, y1, ...]
        if not segmentation:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": list(segmentation["size"]), "counts": counts}


def decode(segmentation, height: int, width: int) -> np.ndarray | None:
    """(H, W) bool mask of a COCO segmentation, or None for a null frame."""
    rle = to_rle(segmentation, height, width)
    if rle is None:
        return None
    return mask_utils.decode(rle).astype(bool)


def encode(mask: np.ndarray) -> dict:
    """Compressed RLE with ``counts`` as str (JSON-ready) of an (H, W) boolean mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
