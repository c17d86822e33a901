"""Class index -> dataset category id and display name, for results files and overlay labels.

Where they come from (the first that applies):

1. a YouTube-VIS annotation JSON given as input: its categories sorted by id, one per class;
2. ``classes.json`` in the model folder: ``[{"id": 1, "name": "person"}, ...]`` in class-index order;
3. a release preset: its dataset's categories (OVIS / YouTube-VIS ids 1..K, VIPSeg ids 0..123,
   :func:`dvis.compat.categories.dataset_categories`) with their names;
4. otherwise class k is category id k + 1, named "class k+1".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dvis.errors import DataError
from dvis.inference.registry import ModelRef

CLASSES_FILE = "classes.json"


@dataclass(frozen=True)
class Categories:
    """``ids[k]`` / ``names[k]``: the dataset category id / display name of class index k."""

    ids: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def default(cls, num_classes: int) -> "Categories":
        return cls(tuple(range(1, num_classes + 1)), tuple(f"class {k}" for k in range(1, num_classes + 1)))

    @classmethod
    def from_pairs(cls, pairs) -> "Categories":
        pairs = list(pairs)
        return cls(tuple(int(i) for i, _ in pairs), tuple(str(n) for _, n in pairs))

    def __len__(self) -> int:
        return len(self.ids)


def model_categories(ref: ModelRef | None, num_classes: int) -> Categories:
    """The categories of a located model (cases 2-4 of the module docstring)."""
    if ref is not None and ref.folder is not None and (ref.folder / CLASSES_FILE).is_file():
        return read_classes_file(ref.folder / CLASSES_FILE, num_classes)
    if ref is not None and ref.kind == "preset":
        from dvis.compat.presets import get_preset

        categories = Categories.from_pairs(get_preset(ref.name).categories)
        _check_count(categories, num_classes, f"release preset {ref.name!r}")
        return categories
    return Categories.default(num_classes)


def json_categories(categories: list[dict], num_classes: int, source: str) -> Categories:
    """A YouTube-VIS file's ``categories`` (sorted by id) as the model's classes, one to one."""
    if len(categories) != num_classes:
        raise DataError(f"{source} has {len(categories)} categories but the model predicts {num_classes} "
                        f"classes; they must correspond one to one (sorted by id)")
    ordered = sorted(categories, key=lambda c: c["id"])
    return Categories.from_pairs((c["id"], c.get("name", c["id"])) for c in ordered)


def read_classes_file(path: Path, num_classes: int) -> Categories:
    """A model folder's ``classes.json``: [{id, name}, ...] in class-index order."""
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
        categories = Categories.from_pairs((c["id"], c["name"]) for c in classes)
    except (ValueError, TypeError, KeyError) as err:
        raise DataError(f"{path}: expected a JSON list of {{'id', 'name'}} objects ({err})") from None
    _check_count(categories, num_classes, str(path))
    return categories


def _check_count(categories: Categories, num_classes: int, source: str) -> None:
    if len(categories) != num_classes:
        raise DataError(f"{source} lists {len(categories)} classes but the model predicts {num_classes}")
