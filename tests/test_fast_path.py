"""The segmenter's bf16 fast path (dvis.modeling.fast_path): same maths as transformers' float32
path, bounded deviation on the segmenter goldens, and a float32 path left exactly as it was."""

from __future__ import annotations

import pytest
import torch
from transformers.models.mask2former.modeling_mask2former import multi_scale_deformable_attention

from dvis.errors import ConfigError, InputError
from dvis.modeling.fast_path import deformable_attention_forward, deformable_sampling
from test_segmenter import DATA, _load, _max_errors

# Largest |bf16 - golden| on the small goldens (docs/model.md gives the measured values) with a
# ~2x margin: bfloat16 keeps 8 significant bits, and the deviations compound over the layers.
BF16_TOLERANCE = {"pred_logits": 0.5, "pred_masks": 1.5, "pred_embds": 1.0, "mask_features": 1.0}


def _random_deformable_inputs(seed: int = 0):
    generator = torch.Generator(torch.get_default_device()).manual_seed(seed)  # cuda under gpu_check.sh
    shapes = [(6, 8), (3, 4), (2, 2)]
    batch, heads, dim, points = 2, 4, 8, 3
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(batch, tokens, heads, dim, generator=generator)
    # locations partly outside 0..1, to exercise the zero padding
    locations = torch.rand(batch, 5, heads, len(shapes), points, 2, generator=generator) * 1.4 - 0.2
    weights = torch.rand(batch, 5, heads, len(shapes), points, generator=generator)
    return value, shapes, locations, weights


def test_per_level_sampling_equals_transformers_function():
    value, shapes, locations, weights = _random_deformable_inputs()
    expected = multi_scale_deformable_attention(value, shapes, locations, weights)
    got = deformable_sampling(value, shapes, locations, weights)
    assert got.shape == expected.shape == (2, 5, 4 * 8)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def r50():
    return _load(DATA / "official_small_r50.pt")


def test_fast_attention_forward_equals_transformers_forward_in_float32(r50):
    """The fast path's attention forward, run without autocast, is transformers' forward."""
    golden, model = r50
    attentions = []
    encoder_layer = model.mask2former.model.pixel_level_module.decoder.encoder.layers[0]
    handle = encoder_layer.self_attn.register_forward_hook(
        lambda module, args, kwargs, output: attentions.append((kwargs, output)), with_kwargs=True)
    try:
        with torch.no_grad():
            model(golden["inputs"]["pixel_values"][:1])
    finally:
        handle.remove()
    kwargs, (expected, expected_weights) = attentions[0]
    with torch.no_grad():
        got, got_weights = deformable_attention_forward(encoder_layer.self_attn, **kwargs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_weights, expected_weights, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["official_small_r50.pt", "official_small_swin.pt"])
def test_bf16_deviation_on_goldens_is_bounded(name):
    golden, model = _load(DATA / name)
    pixel_values = golden["inputs"]["pixel_values"]
    with torch.no_grad():
        ours = model(pixel_values, return_aux=True, precision="bf16")
    for tensor in (ours.pred_logits, ours.pred_masks, ours.pred_embds, ours.mask_features):
        assert tensor.dtype == torch.float32 and tensor.is_contiguous()
    errors = _max_errors(ours, golden["outputs"])
    print(name, "bf16 max abs deviation", {k: f"{v:.3g}" for k, v in errors.items()})
    reference = golden["outputs"]["pred_masks"][0].transpose(0, 1)
    flipped = ((ours.pred_masks > 0) != (reference > 0)).float().mean().item()
    print(name, f"largest |golden| pred_masks {reference.abs().max().item():.3g}, "
          f"pred_embds {golden['outputs']['pred_embds'].abs().max().item():.3g}; "
          f"mask pixels whose sign differs: {100 * flipped:.3f} %")
    for key, limit in BF16_TOLERANCE.items():
        assert errors[key] <= limit, f"{name}: bf16 {key} deviates by {errors[key]:.3g} > {limit}"
    # the fast path is not a silent no-op: it does change the numbers
    assert errors["pred_masks"] > 1e-4


def test_float32_path_is_unchanged_after_a_bf16_call(r50):
    golden, model = r50
    pixel_values = golden["inputs"]["pixel_values"][:1]
    with torch.no_grad():
        before = model(pixel_values)
        model(pixel_values, precision="bf16")
        after = model(pixel_values)
    for name in ("pred_logits", "pred_masks", "pred_embds", "mask_features"):
        assert torch.equal(getattr(before, name), getattr(after, name)), name
    assert not any("forward" in vars(m) for m in model.modules()), "a forward override was left installed"


def test_precision_attribute_selects_the_path(r50):
    golden, model = r50
    pixel_values = golden["inputs"]["pixel_values"][:1]
    try:
        with torch.no_grad():
            explicit = model(pixel_values, precision="bf16")
            model.precision = "bf16"
            default = model(pixel_values)
    finally:
        model.precision = "fp32"
    assert torch.equal(explicit.pred_masks, default.pred_masks)


def test_unknown_precision_is_refused(r50):
    golden, model = r50
    with pytest.raises(InputError, match=r"precision must be one of \('fp32', 'bf16'\), got 'fp16'"):
        model(golden["inputs"]["pixel_values"][:1], precision="fp16")
    with pytest.raises(InputError, match="segmenter precision must be one of"):
        model.precision = "half"


# ------------------------------------------------------------------------ where the option reaches
def _autocast_spy(model):
    """Records, per segmenter network call, whether bfloat16 autocast was on (the fast path)."""
    seen = []
    handle = model.segmenter.mask2former.register_forward_pre_hook(
        lambda module, args: seen.append(torch.is_autocast_enabled("cpu")))
    return seen, handle


def test_predictor_and_stream_use_the_precision_option():
    from dvis.inference.predictor import VideoPredictor
    from inference_helpers import random_frames, tiny_model

    model = tiny_model(num_classes=3)
    frames = random_frames(3)
    seen, handle = _autocast_spy(model)
    try:
        VideoPredictor(model, precision="bf16", window_size=2)(frames, mode="offline")
        assert seen == [True, True]
        list(VideoPredictor(model, precision="bf16").stream(frames))
        assert seen[2:] and all(seen[2:])
        seen.clear()
        VideoPredictor(model, window_size=2)(frames, mode="offline")
        assert seen == [False, False]  # fp32 stays the default
    finally:
        handle.remove()
    with pytest.raises(ConfigError, match=r"precision must be one of \('fp32', 'bf16'\), got 'fp16'"):
        VideoPredictor(model, precision="fp16")


def test_segment_cli_precision_flag_and_resume(tmp_path, monkeypatch):
    """``dvis segment --precision bf16`` runs the fast path; a fp32 rerun does not reuse its results."""
    import dvis.modeling.io as model_io
    from dvis.cli import main
    from inference_helpers import random_frames, save_tiny_model, write_frame_folder

    model_dir = save_tiny_model(tmp_path / "model", num_classes=4, online_only=True)
    write_frame_folder(tmp_path / "clip", random_frames(2))
    seen = []
    original = model_io.load_pretrained

    def spying_load(*args, **kwargs):
        model = original(*args, **kwargs)
        seen.append(_autocast_spy(model)[0])
        return model

    monkeypatch.setattr(model_io, "load_pretrained", spying_load)
    args = ["segment", str(tmp_path / "clip"), "--model", str(model_dir), "--out", str(tmp_path / "out"),
            "--no-render", "--quiet"]
    assert main(args + ["--precision", "bf16"]) == 0
    assert main(args) == 0  # fp32: must recompute, not resume the bf16 result
    assert len(seen) == 2 and seen[0] and all(seen[0]) and seen[1] and not any(seen[1])


def test_training_precision_key(tmp_path):
    from dvis.errors import ConfigError
    from dvis.training.config import train_config_from_dict
    from dvis.training.loop import set_segmenter_precision
    from inference_helpers import tiny_model
    from test_train_common import config_dict

    values = config_dict("segmenter", tmp_path, tmp_path / "out")
    values["solver"]["precision"] = "bf16"
    assert train_config_from_dict(values, "f.yaml").solver.precision == "bf16"
    values["solver"]["precision"] = "fp16"
    with pytest.raises(ConfigError, match="solver.precision = 'fp16': expected fp32 or bf16"):
        train_config_from_dict(values, "f.yaml")
    model = tiny_model(num_classes=3)
    set_segmenter_precision(model, "bf16")
    assert model.segmenter.precision == "bf16"


# ------------------------------------------------------------------------ switch, threads, pickling
def test_the_switch_is_per_thread_so_an_fp32_call_beside_a_bf16_call_stays_exact(r50):
    """The fast attention switches on bfloat16 autocast, which is per thread: an fp32 call in one
    thread while another thread is inside a bf16 call gives the fp32 result bit for bit."""
    import threading

    from dvis.modeling.fast_path import bf16_fast_path

    golden, model = r50
    pixel_values = golden["inputs"]["pixel_values"][:1]
    with torch.no_grad():
        reference = model(pixel_values).pred_masks
        results = {}
        inside, release = threading.Event(), threading.Event()

        def hold_bf16():
            with bf16_fast_path("cpu"):
                inside.set()
                release.wait(30)

        holder = threading.Thread(target=hold_bf16)
        holder.start()
        inside.wait(30)
        worker = threading.Thread(target=lambda: results.update(masks=model(pixel_values).pred_masks))
        worker.start()
        worker.join()
        release.set()
        holder.join()
    assert torch.equal(results["masks"], reference)


def test_only_bfloat16_autocast_switches_to_the_fast_attention(r50):
    from dvis.modeling import fast_path

    golden, model = r50
    calls = []
    original = fast_path.deformable_attention_forward
    fast_path.deformable_attention_forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with torch.no_grad():
            pixel_values = golden["inputs"]["pixel_values"][:1]
            model(pixel_values)
            assert calls == []
            with torch.autocast("cpu", dtype=torch.float16):  # an AMP-style autocast: transformers' path
                model.mask2former(pixel_values=pixel_values)
            assert calls == []
            model(pixel_values, precision="bf16")
            assert len(calls) == model.config.enc_layers
    finally:
        fast_path.deformable_attention_forward = original


def test_a_segmenter_with_the_fast_attention_pickles(r50):
    import io

    golden, model = r50
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    pixel_values = golden["inputs"]["pixel_values"][:1]
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values).pred_masks, model(pixel_values).pred_masks)
