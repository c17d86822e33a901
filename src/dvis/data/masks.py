"""Segmentation decoding (pycocotools): polygons, uncompressed RLE, compressed RLE, null.

pycocotools trusts its input: an RLE whose runs do not add up to ``height * width`` decodes to
uninitialised memory (or a wrong area), and a polygon coordinate of NaN / inf makes it loop
forever, one of 1e12 crashes the interpreter. :func:`check_rle` and :func:`check_polygons`
validate before anything reaches it, and raise :class:`DataError` naming the entry (``where``).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from pycocotools import mask as mask_utils

from dvis.errors import DataError

POLYGON_EXTENT = 8  # polygon coordinates must lie within POLYGON_EXTENT * max(H, W) of the origin
_MAX_DIGITS = 6  # 6 characters hold +-2**29; more would overflow pycocotools' C int shifts


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_polygons(polygons: list, height: int, width: int, where: str) -> list[list[float]]:
    """Validate COCO polygons (a list of flat ``[x0, y0, x1, y1, ...]`` lists, >= 3 points each)
    and return them as float lists."""
    limit = POLYGON_EXTENT * max(height, width)
    checked = []
    for index, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            raise DataError(f"{where}: polygon {index} must be a flat list of at least 3 x, y pairs "
                            f"(an even number >= 6 of values)")
        for value in polygon:
            if not _is_number(value) or not math.isfinite(value) or abs(value) > limit:
                raise DataError(f"{where}: polygon {index} has coordinate {value!r}; expected finite "
                                f"numbers within {limit} of the {width}x{height} frame")
        checked.append([float(v) for v in polygon])
    return checked


def _string_runs(counts: bytes, where: str) -> np.ndarray:
    """Run lengths of COCO's compressed counts string (LEB128-like, 6 bits a character from '0',
    runs after the second stored as differences to the run two before)."""
    codes = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if codes.size and (codes.min() < 0 or codes.max() > 63):
        raise DataError(f"{where}: RLE 'counts' has a character outside '0'..'o' (not a COCO RLE string)")
    more = (codes & 0x20) != 0
    if codes.size and more[-1]:
        raise DataError(f"{where}: RLE 'counts' string ends in the middle of a number (truncated?)")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    digits = ends - starts + 1
    if digits.size and digits.max() > _MAX_DIGITS:
        raise DataError(f"{where}: RLE 'counts' string holds a number of more than {_MAX_DIGITS} characters")
    group = np.repeat(np.arange(ends.size), digits)
    shift = 5 * (np.arange(codes.size) - starts[group])
    values = np.zeros(ends.size, np.int64)
    np.add.at(values, group, (codes & 0x1F) << shift)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * digits[negative])
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def _check_runs(runs, height: int, width: int, where: str) -> None:
    runs = np.asarray(runs, np.int64)
    if runs.size and runs.min() < 0:
        raise DataError(f"{where}: RLE 'counts' has a negative run length")
    total = int(runs.sum())
    if total != height * width:
        raise DataError(f"{where}: RLE 'counts' covers {total} pixels but the mask has "
                        f"{height}x{width} = {height * width}")


def first_bad_counts(counts: list[bytes], pixels: int) -> int | None:
    """Index of the first compressed counts string that is malformed or whose runs do not add up
    to ``pixels``; None when all are valid. Vectorised over all strings (one pass of numpy calls
    for a whole video instead of one per frame); :func:`check_rle` explains a failure."""
    if not counts:
        return None
    lengths = np.fromiter(map(len, counts), np.int64, len(counts))
    if not lengths.all():
        return int(np.flatnonzero(lengths == 0)[0])
    last_char = np.cumsum(lengths) - 1
    codes = np.frombuffer(b"".join(counts), np.uint8).astype(np.int64) - 48
    bad_chars = (codes < 0) | (codes > 63)
    codes = np.where(bad_chars, 0, codes)
    more = (codes & 0x20) != 0
    bad = np.zeros(len(counts), bool)
    bad[np.searchsorted(last_char, np.flatnonzero(bad_chars))] = True  # string holding each bad char
    bad |= more[last_char]
    if bad.any():  # strings before the first unparsable one still parse on their own
        limit = int(np.flatnonzero(bad)[0])
        earlier = first_bad_counts(counts[:limit], pixels) if limit else None
        return limit if earlier is None else earlier
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    digits = ends - starts + 1
    owner = np.searchsorted(last_char, ends)  # string of each number
    bad[owner[digits > _MAX_DIGITS]] = True
    digits = np.minimum(digits, _MAX_DIGITS)
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    shift = np.minimum(5 * (np.arange(codes.size) - starts[group]), 5 * (_MAX_DIGITS - 1))
    values = np.zeros(ends.size, np.int64)
    np.add.at(values, group, (codes & 0x1F) << shift)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * digits[negative])
    # runs[k] = values[k] + runs[k - 2] for k >= 3 within each string: cumulative sums per
    # (string, k == 0 / odd k / even k >= 2) group
    first = np.concatenate([[0], np.flatnonzero(np.diff(owner)) + 1])
    k = np.arange(ends.size) - first[owner]
    key = owner * 3 + np.where(k == 0, 0, np.where(k % 2 == 1, 1, 2))
    order = np.argsort(key, kind="stable")
    ordered = values[order]
    summed = np.cumsum(ordered)
    sorted_key = key[order]
    group_start = np.concatenate([[True], sorted_key[1:] != sorted_key[:-1]])
    start_of = np.maximum.accumulate(np.where(group_start, np.arange(ordered.size), 0))
    runs = np.empty_like(values)
    runs[order] = summed - (summed - ordered)[start_of]
    totals = np.zeros(len(counts), np.int64)
    np.add.at(totals, owner, runs)
    has_negative = np.zeros(len(counts), bool)
    has_negative[owner[runs < 0]] = True
    bad |= has_negative | (totals != pixels)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def check_rle(segmentation, height: int, width: int, where: str, check_runs: bool = True) -> dict:
    """Validate a COCO RLE (``{"size": [H, W], "counts": str | bytes | list[int]}``) against the
    frame size; return it compressed (``counts`` as bytes). ``check_runs=False`` skips the run
    lengths of a compressed string (for callers that check many at once with
    :func:`first_bad_counts`)."""
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise DataError(f"{where}: expected a COCO RLE {{'size': [H, W], 'counts': ...}}, polygons or null, "
                        f"got {type(segmentation).__name__}")
    size = segmentation["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(s) for s in size) \
            or [int(size[0]), int(size[1])] != [height, width]:
        raise DataError(f"{where}: RLE 'size' is {size!r}, expected [height, width] = [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        if not all(_is_int(c) for c in counts):
            raise DataError(f"{where}: uncompressed RLE 'counts' must be a list of integers")
        _check_runs(counts, height, width, where)
        return mask_utils.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]},
                                      height, width)
    if isinstance(counts, str):
        if not counts.isascii():
            raise DataError(f"{where}: RLE 'counts' has a non-ASCII character (not a COCO RLE string)")
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise DataError(f"{where}: RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}")
    if check_runs:
        _check_runs(_string_runs(counts, where), height, width, where)
    return {"size": [height, width], "counts": counts}


def to_rle(segmentation, height: int, width: int, where: str = "segmentation") -> dict | None:
    """Compressed RLE (``counts`` as bytes) of any COCO segmentation; None for null."""
    if segmentation is None:
        return None
    if isinstance(segmentation, list):  # polygons: list of [x0, y0, x1, y1, ...]
        if not segmentation:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(check_polygons(segmentation, height, width, where),
                                                       height, width))
    return check_rle(segmentation, height, width, where)


def decode(segmentation, height: int, width: int, where: str = "segmentation") -> np.ndarray | None:
    """(H, W) bool mask of a COCO segmentation, or None for a null frame."""
    rle = to_rle(segmentation, height, width, where)
    if rle is None:
        return None
    return mask_utils.decode(rle).astype(bool)


def encode(mask: np.ndarray) -> dict:
    """Compressed RLE with ``counts`` as str (JSON-ready) of an (H, W) boolean mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
