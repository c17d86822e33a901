"""detectron2 ``.pkl`` weights (MinVIS / Mask2Former ``model_final_*.pkl``) load without running code.

Properties: a pickled dict of numpy arrays (any protocol, OrderedDict or dict, any byte order or
memory layout) loads as the same tensors and fills a segmenter like the same weights as tensors;
any other global is refused with a CheckpointError naming the file and the global, and is never
called (a marker file is never written); random or corrupted bytes give CheckpointError only.
"""

from __future__ import annotations

import builtins
import collections
import os
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvis.compat.checkpoint import load_official, read_state_dict
from dvis.compat.release_config import dvis_config_from_official
from dvis.errors import CheckpointError
from dvis.modeling.dvis import DVIS
from golden_files import DATA

FUZZ = settings(max_examples=40, deadline=5000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SEGMENTER = ("backbone.", "sem_seg_head.")


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "backbone.stem.conv1.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
        "backbone.fortran": np.asfortranarray(rng.standard_normal((3, 5))),
        "backbone.big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
        "sem_seg_head.half": rng.standard_normal(7).astype(np.float16),
        "sem_seg_head.index": np.arange(9, dtype=np.int64).reshape(3, 3),
        "sem_seg_head.flag": np.array([True, False]),
        "sem_seg_head.scalar": np.array(2.5, dtype=np.float32),
        "sem_seg_head.empty": np.zeros((0, 4), dtype=np.float32),
    }


def _detectron2_file(tmp_path, weights, protocol: int = 2, name: str = "model_final_abc123.pkl"):
    """What detectron2's model zoo stores: the weights under "model" plus bookkeeping fields."""
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"model": weights, "__author__": "Detectron2 Model Zoo",
                                   "matching_heuristics": True}, protocol=protocol))
    return path


@pytest.mark.parametrize("container", [dict, collections.OrderedDict])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickled_dict_of_numpy_arrays_loads_as_the_same_tensors(tmp_path, protocol, container):
    arrays = _arrays()
    state = read_state_dict(_detectron2_file(tmp_path, container(arrays), protocol))
    assert list(state) == list(arrays)
    for key, array in arrays.items():
        expected = torch.from_numpy(array.astype(array.dtype.newbyteorder("=")))
        assert state[key].dtype == expected.dtype and torch.equal(state[key], expected), key


def test_a_torch_zip_named_pkl_is_read_by_torch_load(tmp_path):
    path = tmp_path / "weights.pkl"
    torch.save({"model": {"tracker.w": torch.ones(2)}}, path)
    assert torch.equal(read_state_dict(path)["tracker.w"], torch.ones(2))


def test_the_segmenter_from_a_pkl_equals_the_segmenter_from_tensors(tmp_path):
    """The e2e golden's segmenter weights as a detectron2 .pkl fill a MinVIS model identically."""
    golden = torch.load(DATA / "e2e" / "e2e_small.pt", weights_only=True)
    config = dvis_config_from_official(golden["config"]["values"], meta_architecture="MinVIS")
    segmenter = {k: v for k, v in golden["model"].items() if k.startswith(SEGMENTER)}
    path = _detectron2_file(tmp_path, {k: v.numpy() for k, v in segmenter.items()})
    from_pkl, from_tensors = DVIS(config), DVIS(config)
    info = load_official(from_pkl, path)
    load_official(from_tensors, segmenter)
    assert info.has_segmenter and not info.has_tracker and info.backbone_name == "ResNet-50"
    reference = from_tensors.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in from_pkl.state_dict().items())


# ------------------------------------------------------------------------------- refused globals


class _System:
    """Unpickling this runs ``touch marker`` through os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec(_System):
    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_control_the_payloads_run_under_plain_pickle(tmp_path):
    for payload in (_System(tmp_path / "a"), _Exec(tmp_path / "b")):
        pickle.loads(pickle.dumps(payload))
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("payload, refused", [
    (_System, f"{os.system.__module__}.system"),  # os.system pickles as posix.system on Linux
    (_Exec, "builtins.exec"),
])
def test_a_malicious_global_is_refused_and_never_called(tmp_path, payload, refused, protocol):
    marker = tmp_path / "ran"
    weights = {**_arrays(), "sem_seg_head.evil": payload(marker)}  # after valid arrays, inside "model"
    path = _detectron2_file(tmp_path, weights, protocol)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert str(info.value).startswith(f"{path}: refused to unpickle the global {refused}:")
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_official(DVIS(dvis_config_from_official(_tiny_values())), path)
    assert not marker.exists(), "the unpickler called a refused global"


def _tiny_values() -> dict:
    golden = torch.load(DATA / "e2e" / "e2e_small.pt", weights_only=True)
    return golden["config"]["values"]


def test_torch_tensors_pickled_plainly_are_refused(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": torch.zeros(2)}}, protocol=2))
    with pytest.raises(CheckpointError, match=rf"{path}: refused to unpickle the global torch\."):
        read_state_dict(path)


class _Abuse:
    """An allowed global called in a way numpy never pickles (it could allocate or transform data)."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


HUGE = (2 ** 40,)  # a TiB: allocating it would fail or swap; the file holds no such data


@pytest.mark.parametrize("func, args", [
    (bytes, HUGE),
    (__import__("codecs").encode, ("x", "rot13")),
    (np.ndarray, (HUGE,)),
    (np.ndarray.__reduce__(np.zeros(1))[0], (np.ndarray, HUGE, b"b")),  # numpy's _reconstruct
], ids=["bytes(n)", "encode(rot13)", "ndarray(shape)", "_reconstruct(shape)"])
def test_allowed_globals_refuse_other_uses(tmp_path, func, args):
    path = tmp_path / "abuse.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": _Abuse(func, args)}}, protocol=2))
    with pytest.raises(CheckpointError, match=rf"{path}: not a readable detectron2 \.pkl "):
        read_state_dict(path)


def test_object_arrays_are_not_weights(tmp_path):
    path = _detectron2_file(tmp_path, {"backbone.w": np.array([1, "a"], dtype=object)})
    with pytest.raises(CheckpointError, match=rf"{path}: backbone\.w is a numpy array of dtype object"):
        read_state_dict(path)


# ------------------------------------------------------------------------------- junk bytes


@FUZZ
@given(raw=st.binary(max_size=300), header=st.sampled_from([b"", b"\x80\x02", b"\x80\x04", b"\x80\x05"]))
def test_random_bytes_give_checkpoint_error_only(tmp_path_factory, raw, header):
    path = tmp_path_factory.mktemp("raw") / "model_final.pkl"
    path.write_bytes(header + raw)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def valid_pickles() -> dict[int, bytes]:
    weights = {"model": _arrays(), "__author__": "Detectron2 Model Zoo"}
    return {protocol: pickle.dumps(weights, protocol=protocol) for protocol in (2, 4, 5)}


@FUZZ
@given(protocol=st.sampled_from([2, 4, 5]), cut=st.floats(0, 0.999),
       flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(1, 255)), max_size=4))
def test_cut_or_corrupted_pickles_are_refused_or_load_tensors(tmp_path_factory, valid_pickles, protocol, cut, flips):
    raw = bytearray(valid_pickles[protocol])
    for where, xor in flips:
        raw[int(where * len(raw))] ^= xor
    path = tmp_path_factory.mktemp("bad") / "model_final.pkl"
    path.write_bytes(bytes(raw) if flips else bytes(raw[: int(cut * len(raw))]))
    try:
        state = read_state_dict(path)
    except CheckpointError as err:
        assert str(path) in str(err)
    else:
        assert flips, "a cut pickle loaded"
        assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
