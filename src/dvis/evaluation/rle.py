"""Per-frame mask encodings as pycocotools RLEs.

Every segmentation the evaluators touch is normalised to a *compressed* COCO RLE
(``{"size": [H, W], "counts": bytes}``) or ``None`` for "no mask on this frame".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_api

from dvis.data.masks import check_polygons, check_rle, first_bad_counts
from dvis.errors import DataError


def to_rle(segm: Any, height: int, width: int, where: str, check_runs: bool = True) -> dict | None:
    """Normalise one frame's segmentation (RLE / uncompressed RLE / polygons / null) to RLE.

    ``where`` names the file, entry and field for error messages.
    Falsy values (``None``, ``{}``, ``[]``) mean "no mask on this frame", as in the public code.
    RLE run lengths must add up to ``height * width`` and polygon coordinates must be finite and
    near the frame (:mod:`dvis.data.masks` validates before pycocotools, which trusts its input).
    """
    if not segm:
        return None
    if isinstance(segm, list):  # polygons
        polygons = check_polygons(segm, height, width, where)
        return mask_api.merge(mask_api.frPyObjects(polygons, height, width))
    return check_rle(segm, height, width, where, check_runs)


def to_rles(segms: list, height: int, width: int, where: str) -> list[dict | None]:
    """:func:`to_rle` of every frame of a track, with the run lengths of all compressed strings
    checked in one vectorised pass; a failure is explained by the single-frame check."""
    wheres = [f"{where}[{f}]" for f in range(len(segms))]
    rles = [to_rle(s, height, width, w, check_runs=False) for s, w in zip(segms, wheres)]
    present = [f for f, r in enumerate(rles) if r is not None]
    bad = first_bad_counts([rles[f]["counts"] for f in present], height * width)
    if bad is not None:
        to_rle(segms[present[bad]], height, width, wheres[present[bad]])  # raises, naming the problem
        raise DataError(f"{wheres[present[bad]]}: malformed RLE 'counts'")  # not reached
    return rles


def encode_masks(masks: np.ndarray) -> list[dict]:
    """(T, H, W) bool/uint8 masks -> T compressed RLEs with ``str`` counts (JSON-ready)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise DataError(f"masks must have shape (T, H, W), got {masks.shape}")
    rles = mask_api.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


# pycocotools' ``area`` allocates ``np.array((n,), dtype=np.uint8)`` before filling its result, so
# under numpy 2 a list of 256 or more RLEs raises OverflowError; it is called on at most this many.
AREA_BATCH = 255


def areas(rles: list[dict]) -> np.ndarray:
    """Pixel counts of a list of RLEs, (N,) float64 (empty list -> empty array)."""
    if not rles:
        return np.zeros((0,), dtype=np.float64)
    batches = [mask_api.area(rles[i:i + AREA_BATCH]) for i in range(0, len(rles), AREA_BATCH)]
    return np.concatenate(batches).astype(np.float64)


def intersections(d_rles: list[dict], g_rles: list[dict], d_areas: np.ndarray,
                  g_areas: np.ndarray) -> np.ndarray:
    """Exact pixel intersections (D, G) of two lists of same-size RLEs.

    pycocotools returns IoU = I / (A + B - I); I = IoU (A + B) / (1 + IoU) recovers the integer
    intersection up to ~1e-10, so rounding gives it exactly (areas are far below 2**40).
    """
    if not d_rles or not g_rles:
        return np.zeros((len(d_rles), len(g_rles)), dtype=np.float64)
    iou = np.asarray(mask_api.iou(d_rles, g_rles, [0] * len(g_rles)), dtype=np.float64)
    iou = iou.reshape(len(d_rles), len(g_rles))
    total = d_areas[:, None] + g_areas[None, :]
    return np.rint(iou * total / (1.0 + iou))
