"""The one loader from plain data (YAML, JSON, overrides) to the package's config dataclasses.

:func:`from_dict` builds a dataclass from a mapping: nested dataclasses, ``X | None``, tuples and
lists, ``Literal`` choices, and int / float / bool / str values (a YAML ``on``/``off`` read as a
boolean becomes the string ``"on"``/``"off"``; an integral float is an int; a numeric string such as
``1e-4`` is a number). Unknown keys are refused with the closest known ones; every error is a
:class:`~dvis.errors.ConfigError` that names the file (``source``), the full dotted key and what
was expected. The built object's ``validate()`` runs when the class has one.

A ``null`` for a nested dataclass that is not optional means its defaults.
This module is at the bottom of the package: it imports nothing from it but :mod:`dvis.errors`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from typing import Any, Literal, Mapping, TypeVar, Union

from dvis.errors import ConfigError

T = TypeVar("T")


class _Invalid(Exception):
    """A value does not fit its field's type (turned into a ConfigError by the field)."""


def from_dict(cls: type[T], values: Mapping, *, source: str, prefix: str = "") -> T:
    """``cls`` built from ``values``; ``prefix`` is the dotted path of ``values`` in ``source``
    (``"solver."``, ``"model.tracker."``), used in every message."""
    section = prefix.rstrip(".")
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        where = f"{section}: " if section else ""
        raise ConfigError(f"{source}: {where}expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(values, list(fields), source, prefix)
    _check_required(values, fields, source, section)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        if value is None and _is_section(hints[name]) and not _optional(hints[name]):
            continue  # a null section: its defaults
        kwargs[name] = _convert_field(hints[name], value, f"{prefix}{name}", source)
    return _construct(cls, kwargs, source, prefix)


def _check_required(values: Mapping, fields: dict, source: str, section: str) -> None:
    required = [name for name, f in fields.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and name not in values]
    if required:
        where = f"section {section!r}" if section else "the config"
        raise ConfigError(f"{source}: {where} lacks required key(s): {', '.join(required)}")


def _construct(cls: type[T], kwargs: dict, source: str, prefix: str) -> T:
    """``cls(**kwargs)`` then ``validate()``; their errors get the file and the dotted key."""
    try:
        built = cls(**kwargs)
        if hasattr(built, "validate"):
            built.validate()
    except (ConfigError, TypeError, ValueError) as err:
        raise ConfigError(located(str(err), source, prefix, cls)) from None
    return built


def located(message: str, source: str, prefix: str, cls: type) -> str:
    """``message`` of ``cls.validate()`` with the file and the dotted key: a message that starts
    with a field name gets the prefix joined to it (``solver.max_iter = 0: ...``)."""
    head = re.match(r"\w+", message)
    names = {f.name for f in dataclasses.fields(cls)}
    if prefix and head is not None and head.group() in names:
        return f"{source}: {prefix}{message}"
    if prefix:
        return f"{source}: {prefix.rstrip('.')}: {message}"
    return f"{source}: {message}"


# ----------------------------------------------------------------------------------- unknown keys
def check_keys(values: Mapping, known: list[str], source: str, prefix: str = "") -> None:
    """ConfigError for the keys of ``values`` that are not in ``known`` (closest matches named)."""
    unknown = [str(key) for key in values if key not in known]
    if not unknown:
        return
    section = prefix.rstrip(".")
    more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
    listed = f" (unknown key(s) in {section!r}: {', '.join(unknown)})" if section else ""
    close = difflib.get_close_matches(unknown[0], known, n=4, cutoff=0.6)
    raise ConfigError(f"{source}: unknown config key {prefix + unknown[0]!r}{more}{listed}"
                      + _hint([prefix + k for k in close], [prefix + k for k in known]))


def unknown_key_error(key: str, known: list[str], source: str) -> ConfigError:
    """``SOURCE: unknown config key 'KEY'; did you mean: ...?`` (else the known keys)."""
    return ConfigError(f"{source}: unknown config key {key!r}"
                       + _hint(difflib.get_close_matches(key, known, n=4, cutoff=0.6), known))


def _hint(close: list[str], known: list[str]) -> str:
    return f"; did you mean: {', '.join(close)}?" if close else f"; known keys: {', '.join(known)}"


def dotted_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key a mapping for ``cls`` may set, nested sections and their keys included."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.append(f"{prefix}{f.name}")
        nested = _section_class(hints[f.name])
        if nested is not None:
            keys += dotted_keys(nested, f"{prefix}{f.name}.")
    return keys


# ------------------------------------------------------------------------------------ conversion
def _convert_field(tp: Any, value: Any, key: str, source: str) -> Any:
    try:
        return _convert(tp, value, key, source)
    except _Invalid:
        raise ConfigError(f"{source}: {key}: expected {describe(tp)}, got {key} = {value!r}") from None


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    """``value`` as type ``tp``; _Invalid when it does not fit (nested sections raise ConfigError)."""
    if _optional(tp):
        return None if value is None else _convert(_non_null(tp), value, key, source)
    if value is None:
        raise _Invalid
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, (Mapping, tp)):
            raise _Invalid
        return from_dict(tp, value, source=source, prefix=f"{key}.")
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _Invalid
        return value
    if origin in (list, tuple):
        return _sequence(tp, value, key, source)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _Invalid
        return copy.deepcopy(dict(value))
    return _scalar(tp, value)


def _scalar(tp: Any, value: Any) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise _Invalid
        return value
    if tp is str:
        if isinstance(value, bool):  # YAML reads unquoted on/off as booleans
            return "on" if value else "off"
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, (str, int, float)):
            raise _Invalid
        return str(value)
    if tp in (int, float):
        return _number(tp, value)
    return value


def _number(tp: type, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Invalid
    try:
        if tp is float:
            return float(value)
        number = int(value) if isinstance(value, str) else value
        if isinstance(number, float) and not number.is_integer():
            raise _Invalid
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise _Invalid from None


def _sequence(tp: Any, value: Any, key: str, source: str) -> list | tuple:
    if not isinstance(value, (list, tuple)):
        raise _Invalid
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise _Invalid
        items = [_convert(a, v, key, source) for a, v in zip(args, value)]
    else:
        item_type = args[0] if args else Any
        items = [_convert(item_type, v, key, source) for v in value]
    return tuple(items) if typing.get_origin(tp) is tuple else items


# --------------------------------------------------------------------------------------- types
def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def _non_null(tp: Any) -> Any:
    rest = [a for a in typing.get_args(tp) if a is not type(None)]
    return rest[0] if len(rest) == 1 else Union[tuple(rest)]


def _section_class(tp: Any) -> type | None:
    """The dataclass of a (possibly optional) nested section, else None."""
    tp = _non_null(tp) if _optional(tp) else tp
    return tp if dataclasses.is_dataclass(tp) else None


def _is_section(tp: Any) -> bool:
    return _section_class(tp) is not None


def describe(tp: Any) -> str:
    """What a value of type ``tp`` must be, in words (``int``, ``a list of numbers``, ...)."""
    if _optional(tp):
        return f"{describe(_non_null(tp))} or null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        fixed = origin is tuple and Ellipsis not in typing.get_args(tp)
        count = f"{len(args)} " if fixed else ""
        numeric = args and all(a in (int, float) for a in args)
        return f"a list of {count}numbers" if numeric else f"a list of {count}values"
    if dataclasses.is_dataclass(tp) or origin is dict or tp is dict:
        return "a mapping"
    if tp is bool:
        return "bool (true or false)"
    return getattr(tp, "__name__", str(tp))


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain data (tuples as lists), the inverse of :func:`from_dict`."""
    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))
