"""Robustness of the weight and config loaders: released checkpoints (``dvis.compat.checkpoint``),
our model folders (``dvis.modeling.io``) and YAML configs.

Properties: malformed files / dicts raise :class:`CheckpointError` or :class:`ConfigError` naming
the file and the problem; NaN / inf weights are refused; loading never executes code (pickle
``__reduce__`` payloads and ``!!python/...`` YAML tags are refused and never run).
"""

from __future__ import annotations

import builtins
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from dvis.compat.checkpoint import load_official, read_state_dict, unwrap_state_dict
from dvis.compat.release_config import dvis_config_from_official
from dvis.errors import CheckpointError, ConfigError, DVISError
from dvis.modeling.dvis import DVIS
from dvis.modeling.io import config_from_dict, config_to_dict, load_config, load_pretrained, save_pretrained
from test_model_io import tiny_config
from test_release_layouts_full_model import LAYOUTS, fake_checkpoint
from test_robust_readers import mutated

FUZZ = settings(max_examples=40, deadline=5000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------- code never runs


class _Payload:
    """Unpickling this writes ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    payload = {"model": {"backbone.stem.conv1.weight": torch.zeros(1)}, "extra": _Payload(marker)}
    files = {}
    files["torch.save zip"] = folder / "zip.pth"
    torch.save(payload, files["torch.save zip"])
    files["legacy pickle"] = folder / "legacy.pkl"
    files["legacy pickle"].write_bytes(pickle.dumps(payload, protocol=2))
    files["legacy torch.save"] = folder / "legacy.pth"
    torch.save(payload, files["legacy torch.save"], _use_new_zipfile_serialization=False)
    files["pickle named .safetensors"] = folder / "evil.safetensors"
    files["pickle named .safetensors"].write_bytes(pickle.dumps(payload))
    return files


def test_control_the_payload_runs_under_plain_pickle(tmp_path):
    """The payload is real: plain ``pickle.loads`` does run it (so the tests below can fail)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.read_text() == "ran"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pickle_payloads_are_refused_by_every_weight_loader(tmp_path):
    marker = tmp_path / "ran"
    model = DVIS(tiny_config())
    for kind, path in _evil_files(tmp_path, marker).items():
        with pytest.raises(CheckpointError, match="weights-only|safetensors|refused to unpickle") as info:
            read_state_dict(path)
        assert str(path) in str(info.value), kind
        with pytest.raises(CheckpointError):
            load_official(model, path)
        folder = tmp_path / f"folder_{path.stem}"
        save_pretrained(model, folder)
        (folder / "model.safetensors").write_bytes(path.read_bytes())
        with pytest.raises(CheckpointError, match="safetensors"):
            load_pretrained(folder)
    assert not marker.exists(), "a loader executed pickled code"


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:builtins.exec [\"open('{marker}', 'w').write('ran')\"]",
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:builtins.exec [\"open('{marker}', 'w').write('ran')\"]",
    "!!python/name:os.system",
])
def test_yaml_python_tags_are_refused(tmp_path, tag):
    marker = tmp_path / "ran"
    path = tmp_path / "config.yaml"
    path.write_text(f"segmenter: {tag.format(marker=marker)}\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: cannot read config"):
        load_config(path)
    model_dir = tmp_path / "m"
    save_pretrained(DVIS(tiny_config()), model_dir)
    (model_dir / "config.yaml").write_text(path.read_text())
    with pytest.raises(ConfigError):
        load_pretrained(model_dir)
    assert not marker.exists()


# ----------------------------------------------------------------------------- malformed files


@FUZZ
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".pth", ".pkl", ".safetensors", ".bin"]))
def test_random_bytes_are_refused(tmp_path_factory, raw, suffix):
    path = tmp_path_factory.mktemp("raw") / f"weights{suffix}"
    path.write_bytes(raw)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("valid")
    state = {"tracker.a.weight": torch.randn(4, 3), "tracker.a.bias": torch.randn(4)}
    torch.save({"model": state}, folder / "w.pth")
    save_file(state, str(folder / "w.safetensors"))
    return {".pth": (folder / "w.pth").read_bytes(), ".safetensors": (folder / "w.safetensors").read_bytes()}


@FUZZ
@given(suffix=st.sampled_from([".pth", ".safetensors"]), cut=st.floats(0, 0.999),
       flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(1, 255)), max_size=4))
def test_truncated_or_corrupted_files_are_refused_or_load_tensors(tmp_path_factory, valid_files, suffix, cut, flips):
    """A cut file is always refused; flipped bytes are refused or (if they hit tensor data only)
    load as a name -> tensor dict."""
    raw = bytearray(valid_files[suffix])
    for where, xor in flips:
        raw[int(where * len(raw))] ^= xor
    path = tmp_path_factory.mktemp("bad") / f"w{suffix}"
    path.write_bytes(bytes(raw[: int(cut * len(raw))]) if not flips else bytes(raw))
    try:
        state = read_state_dict(path)
    except CheckpointError as err:
        assert str(path) in str(err)
    else:
        assert flips, "a truncated file loaded"
        assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


tensors = st.builds(lambda n: torch.zeros(n), st.integers(0, 3))
junk = st.recursive(st.none() | st.integers() | st.text(max_size=4) | st.floats() | tensors
                    | st.builds(lambda: np.zeros(2)),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4) | st.integers(),
                                                                              inner, max_size=3),
                    max_leaves=6)


@FUZZ
@given(raw=junk | st.dictionaries(st.sampled_from(["model", "state_dict", "iteration"]), junk, max_size=3))
def test_unwrap_state_dict_accepts_only_name_to_tensor(raw):
    try:
        state = unwrap_state_dict(raw, "ckpt.pth")
    except CheckpointError as err:
        assert "ckpt.pth" in str(err)
    else:
        assert state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


# ----------------------------------------------------------------------------- released layout

R50_ONLINE = next(p for p in LAYOUTS if p.stem.endswith("r50_online"))


@pytest.fixture(scope="module")
def release():
    """Full R50 online model and checkpoint on the meta device (shapes only, no memory)."""
    import json

    config = dvis_config_from_official(json.loads(R50_ONLINE.read_text())["config"])
    with torch.device("meta"):
        model = DVIS(config)
    return model, fake_checkpoint(R50_ONLINE, config)


def _load(release, change) -> None:
    model, checkpoint = release
    state = dict(checkpoint)
    change(state)
    load_official(model, {"model": state}, source="dvis_r50.pth", assign=True)


def test_intact_released_layout_loads(release):
    _load(release, lambda state: None)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"tracker.class_embed.weight": torch.zeros(3, 3, device="meta")}),
     r"tracker\.class_embed\.weight: expected \(26, 256\), found \(3, 3\)"),
    (lambda s: s.update({"backbone.stem.conv1.weight": torch.zeros(1, device="meta")}),
     r"backbone\.stem\.conv1\.weight"),
    (lambda s: s.update({"tracker.class_embed.bias": torch.full((26,), float("nan"))}),
     r"NaN or infinite values: tracker\.class_embed\.bias"),
    (lambda s: s.update({"sem_seg_head.predictor.query_feat.weight": torch.full((200, 256), float("inf"))}),
     r"NaN or infinite values: sem_seg_head\.predictor\.query_feat\.weight"),
    (lambda s: s.update({"tracker.class_embed.bias": 3}), r"not tensors: \['tracker\.class_embed\.bias'\]"),
    (lambda s: s.update({"tracker.class_embed.bias": {"nested": torch.zeros(1)}}), r"not tensors"),
    (lambda s: s.update({"tracker.class_embed.bias": torch.zeros(26, dtype=torch.int64, device="meta")}),
     r"tracker\.class_embed\.bias: expected a floating-point tensor, found torch\.int64"),
    (lambda s: s.pop("tracker.class_embed.bias"), r"missing keys.*\n.*tracker\.class_embed\.bias"),
    (lambda s: s.update({"junk.key": torch.zeros(1)}), r"unexpected keys.*\n.*junk\.key"),
])
def test_malformed_released_checkpoints_name_the_key(release, change, message):
    with pytest.raises(CheckpointError, match=message) as info:
        _load(release, change)
    assert "dvis_r50.pth" in str(info.value)


# ----------------------------------------------------------------------------- model folders


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(DVIS(tiny_config()), tmp_path_factory.mktemp("model") / "m")


@settings(max_examples=25, deadline=20000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(values=mutated(config_to_dict(tiny_config())))
def test_junk_config_yaml_is_refused_before_building(tmp_path_factory, model_folder, values):
    """A mutated config.yaml loads only if it still describes the saved weights; otherwise a typed
    error names the file. Absurd sizes never allocate: shapes are checked on the meta device."""
    folder = tmp_path_factory.mktemp("junk")
    for name in ("model.safetensors",):
        (folder / name).symlink_to(model_folder / name)
    (folder / "config.yaml").write_text(yaml.safe_dump(values))
    try:
        model = load_pretrained(folder)
    except DVISError as err:
        assert "config.yaml" in str(err) or "model.safetensors" in str(err) or "inference" in str(err)
    else:
        assert isinstance(model, DVIS)


def test_huge_sizes_in_config_fail_without_allocating(tmp_path, model_folder):
    """hidden_dim: 2**20 would need ~TBs; the meta build + header check refuses it at once."""
    values = config_to_dict(tiny_config())
    values["tracker"]["hidden_dim"] = values["tracker"]["feedforward_dim"] = 2 ** 20
    (tmp_path / "model.safetensors").symlink_to(model_folder / "model.safetensors")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(CheckpointError, match=r"shape mismatches"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("values, message", [
    ({"segmenter": {"backbone": "resnet"}}, r"lacks required key\(s\): num_classes"),
    ({"segmenter": {"backbone": "resnet", "num_classes": "three"}}, r"segmenter\.num_classes: expected int"),
    ({"segmenter": {"backbone": "resnet", "num_classes": 3}, "tracker": {"num_layers": [1]}},
     r"tracker\.num_layers: expected int"),
    ({"segmenter": {"backbone": "resnet", "num_classes": 3}, "inference": {"max_num": True}},
     r"inference\.max_num: expected int"),
    ({"segmenter": {"backbone": "resnet", "num_classes": 3, 7: 1}}, r"unknown key\(s\) in 'segmenter': 7"),
    ({"segmenter": {"backbone": "resnet", "num_classes": 3}, "inference": {"thing_classes": "abc"}},
     r"inference\.thing_classes: expected a list of numbers"),
    (["segmenter"], r"expected a mapping"),
])
def test_config_from_dict_types(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values, "cfg.yaml")


def test_unreadable_config_and_bad_overrides(tmp_path, model_folder):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xff\xfe\x00 not utf-8")
    with pytest.raises(ConfigError, match=r"config\.yaml: cannot read config"):
        load_config(path)
    with pytest.raises(ConfigError, match="inference overrides"):
        load_pretrained(model_folder, no_such_option=1)


def test_nan_weights_in_a_model_folder_are_refused(tmp_path, model_folder):
    from safetensors.torch import load_file

    state = load_file(str(model_folder / "model.safetensors"))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name] = torch.full_like(state[name], float("nan"))
    (tmp_path / "config.yaml").write_bytes((model_folder / "config.yaml").read_bytes())
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"NaN or infinite values: {name}"):
        load_pretrained(tmp_path)


def test_in_memory_pickle_is_never_the_fallback(tmp_path):
    """torch.load(weights_only=True) also refuses an in-memory stream with a payload."""
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"x": _Payload(marker)}, buffer)
    path = tmp_path / "stream.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not marker.exists()
