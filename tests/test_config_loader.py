"""dvis.config.from_dict: the one loader from plain data to config dataclasses (nested sections,
optional values, tuples, scalar coercion, unknown keys, validate() errors naming file and key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from dvis.config import dotted_keys, from_dict, to_dict
from dvis.errors import ConfigError


@dataclass
class Inner:
    size: int = 4
    ratio: float = 0.5
    kind: Literal["a", "b"] = "a"

    def validate(self) -> None:
        if self.size < 1:
            raise ConfigError(f"size = {self.size}: expected >= 1")


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    extra: Inner | None = None
    sizes: tuple[int, ...] = (1, 2)
    rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    steps: list[int] = field(default_factory=list)
    flag: bool = False
    switch: str = "auto"


def test_nested_optional_tuples_and_coercion():
    built = from_dict(Outer, {"name": 7, "inner": {"size": 3.0, "ratio": "1e-4"}, "extra": {"kind": "b"},
                              "sizes": [3, 4.0], "rgb": [1, 2, 3], "steps": (5,), "switch": False}, source="f.yaml")
    assert built == Outer(name="7", inner=Inner(size=3, ratio=1e-4), extra=Inner(kind="b"), sizes=(3, 4),
                          rgb=(1.0, 2.0, 3.0), steps=[5], switch="off")
    assert from_dict(Outer, to_dict(built), source="again") == built
    assert from_dict(Outer, {"name": "x", "inner": None}, source="f.yaml").inner == Inner()  # null section: defaults


@pytest.mark.parametrize("values, message", [
    ({"name": "x", "inner": {"size": 2.5}}, r"f\.yaml: inner\.size: expected int, got inner\.size = 2\.5"),
    ({"name": "x", "flag": "yes"}, r"f\.yaml: flag: expected bool"),
    ({"name": "x", "rgb": [1, 2]}, r"rgb: expected a list of 3 numbers"),
    ({"name": "x", "sizes": "12"}, r"sizes: expected a list of numbers"),
    ({"name": "x", "inner": {"kind": "c"}}, r"inner\.kind: expected one of 'a', 'b'"),
    ({"name": None}, r"name: expected str, got name = None"),
    ({"inner": {}}, r"f\.yaml: the config lacks required key\(s\): name"),
    ({"name": "x", "inner": {"sise": 1}},
     r"unknown config key 'inner\.sise' \(unknown key\(s\) in 'inner': sise\); did you mean: inner\.size\?"),
    ({"name": "x", "inner": {"size": 0}}, r"f\.yaml: inner\.size = 0: expected >= 1"),
    (["name"], r"f\.yaml: expected a mapping, got list"),
])
def test_errors_name_the_file_the_dotted_key_and_what_was_expected(values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, values, source="f.yaml")


def test_prefix_and_dotted_keys():
    with pytest.raises(ConfigError, match=r"cfg\.yaml: model\.outer\.inner\.size = 0"):
        from_dict(Outer, {"name": "x", "inner": {"size": 0}}, source="cfg.yaml", prefix="model.outer.")
    keys = dotted_keys(Outer)
    assert "inner.size" in keys and "extra.kind" in keys and "switch" in keys and "inner" in keys
