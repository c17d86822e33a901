"""Read detectron2 ``.pkl`` weights (``model_final_*.pkl``) without running pickled code.

The release's segmenter configs start from MinVIS / Mask2Former model-zoo weights stored as a
pickled ``{"model": {name: numpy array}, "__author__": ..., ...}``. A pickle can name any global
and call it, so :class:`NumpyOnlyUnpickler` resolves only the globals that numpy arrays (and an
``OrderedDict`` around them) pickle to:

- ``numpy.core.multiarray._reconstruct`` (numpy 1) / ``numpy._core.multiarray._reconstruct``
  (numpy 2), ``numpy.ndarray`` and ``numpy.dtype``: protocols 0-4. ``_reconstruct`` only as numpy
  itself calls it (``(ndarray, (0,), code)``) and ``ndarray`` only as its argument, so a file
  cannot allocate an array larger than the data it holds;
- ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer``: protocol 5;
- ``_codecs.encode`` (latin-1 text only) and ``bytes()`` without arguments: how protocols 0-2
  write the arrays' raw bytes;
- ``collections.OrderedDict``.

Dicts, lists, tuples, strings and numbers need no globals. Any other global raises
:class:`CheckpointError` naming the file and the global before anything is called. Arrays become
tensors; object or string arrays are refused.
"""

from __future__ import annotations

import _compat_pickle
import collections
import importlib
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dvis.errors import CheckpointError

WEIGHT_KINDS = "biuf"  # numpy dtype kinds that are weights: bool, signed, unsigned, floating point


def _numpy_global(module: str, name: str):
    """``numpy._core.<module>.<name>`` (numpy 2) or ``numpy.core.<module>.<name>`` (numpy 1)."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {module}.{name}")


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocols 0-2 use it for bytes: latin-1 text -> bytes, nothing else."""
    if not isinstance(text, str) or str(encoding).replace("-", "").replace("_", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode is allowed only on text with latin1, got {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args):
    """``bytes()`` as protocols 0-2 write an empty bytes object; with arguments it is refused."""
    if args:
        raise pickle.UnpicklingError("builtins.bytes is allowed only without arguments")
    return b""


class _NdarrayType:
    """Stands for ``numpy.ndarray`` in a pickle. Only :func:`_reconstruct` takes it: called directly,
    ``numpy.ndarray(shape)`` would allocate any size with no data in the file."""

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray may only be an argument of _reconstruct, not called")


_NDARRAY = _NdarrayType()
_NUMPY_RECONSTRUCT = _numpy_global("multiarray", "_reconstruct")


def _reconstruct(subtype, shape, dtype_code):
    """``_reconstruct`` as numpy pickles an array: ``(ndarray, (0,), code)``, then ``__setstate__``
    fills shape and data (numpy checks the data's length against the shape)."""
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        raise pickle.UnpicklingError("numpy _reconstruct is allowed only as (numpy.ndarray, (0,), code)")
    return _NUMPY_RECONSTRUCT(np.ndarray, (0,), dtype_code)


def _allowed_globals() -> dict[tuple[str, str], object]:
    frombuffer = _numpy_global("numeric", "_frombuffer")
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("builtins", "bytes"): _empty_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


ALLOWED_GLOBALS = _allowed_globals()


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names (``__builtin__.bytes``, protocols 0-2) -> Python 3 names, as pickle does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays in dicts/lists/tuples and nothing else."""

    def find_class(self, module: str, name: str):
        module, name = _python3_name(module, name)
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise RefusedGlobal(str(module), str(name)) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids (torch storages) are not numpy arrays")


def read_detectron2_pickle(path: str | Path) -> object:
    """Unpickle ``path`` with :class:`NumpyOnlyUnpickler`; arrays in it (top level and one dict
    below, e.g. ``model``) become tensors. Raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except RefusedGlobal as err:
        raise CheckpointError(
            f"{path}: refused to unpickle the global {err.qualified_name}: a detectron2 .pkl may hold "
            "only numpy arrays in dicts, lists and tuples, so nothing else is loaded (nothing was run)"
        ) from None
    except Exception as err:  # noqa: BLE001 - junk bytes raise UnpicklingError, EOFError, ValueError, ...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable detectron2 .pkl (a pickled dict of numpy arrays): "
                              f"{first_line}") from None
    return _arrays_to_tensors(raw, str(path))


def _arrays_to_tensors(raw: object, source: str) -> object:
    if not isinstance(raw, dict):
        return raw
    converted = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            value = {k: _tensor(v, k, source) if isinstance(v, np.ndarray) else v for k, v in value.items()}
        elif isinstance(value, np.ndarray):
            value = _tensor(value, key, source)
        converted[key] = value
    return converted


def _tensor(array: np.ndarray, key: object, source: str) -> Tensor:
    if array.dtype.kind not in WEIGHT_KINDS:
        raise CheckpointError(f"{source}: {key} is a numpy array of dtype {array.dtype}, not weights "
                              "(expected bool, integer or floating point)")
    native = np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True)
    return torch.from_numpy(native)
