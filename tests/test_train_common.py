"""Shared tiny set-up for the training tests (64x64 synthetic videos, tiny models), plus the
checks of the exported stage models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dvis.modeling.dvis import DVIS
from dvis.modeling.io import config_from_dict, load_pretrained, save_pretrained
from dvis.training.config import TrainConfig, train_config_from_dict

NUM_CLASSES = 6  # the synthetic benchmark's thing classes


def tiny_segmenter() -> dict:
    return dict(backbone="resnet", num_classes=NUM_CLASSES, hidden_dim=32, mask_dim=32, convs_dim=32, num_heads=4,
                dim_feedforward=64, dec_layers=3, num_queries=6, enc_layers=1, enc_dim_feedforward=64,
                resnet_stem_out_channels=8, resnet_res2_out_channels=16, resnet_width_per_group=4)


def tiny_head(**extra) -> dict:
    return dict(num_classes=NUM_CLASSES, hidden_dim=32, feedforward_dim=64, num_heads=4, num_layers=2, mask_dim=32,
                **extra)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is fastest, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from dvis.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic") / "set"
    generate(root, videos=3, frames=8, seed=3, height=64, width=64, objects=(2, 3), occlusion="heavy")
    return root


def config_dict(stage: str, root: Path, out: Path, init: Path | None = None) -> dict:
    model = {"segmenter": tiny_segmenter()} if stage == "segmenter" else {}
    if stage == "tracker":
        model["tracker"] = tiny_head()
    if stage == "refiner":
        model["refiner"] = tiny_head()
    frames = {"segmenter": 2, "tracker": 3, "refiner": 4}[stage]
    return {
        "output_dir": str(out),
        "seed": 1,
        "model": model,
        "init": {"model": str(init) if init else None},
        "data": {"format": "ytvis", "root": str(root), "annotations": "annotations.json",
                 "image_root": "JPEGImages", "num_frames": frames, "frame_range": 2, "augmentation": None,
                 "num_workers": 0},
        "solver": {"max_iter": 4, "steps": [3], "batch_size": 2, "clips_per_gpu": 2, "checkpoint_period": 2,
                   "log_period": 1, "base_lr": 1e-3},
        "loss": {"num_points": 64},
        "cache": {"enabled": "off"},
    }


def make_config(stage: str, root: Path, out: Path, init: Path | None = None, **sections) -> TrainConfig:
    values = config_dict(stage, root, out, init)
    for name, update in sections.items():
        values[name] = {**values.get(name, {}), **update} if isinstance(update, dict) else update
    return train_config_from_dict(values, "test")


def saved_model(directory: Path, parts: tuple[str, ...], seed: int = 0) -> Path:
    """A randomly initialised model folder with the given parts (stands in for a trained stage)."""
    torch.manual_seed(seed)
    sections = {"segmenter": tiny_segmenter(), "inference": {"max_num": 3, "min_size_test": 64}}
    if "tracker" in parts:
        sections["tracker"] = tiny_head()
    if "refiner" in parts:
        sections["refiner"] = tiny_head()
    return save_pretrained(DVIS(config_from_dict(sections)), directory)


def trained_params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------ tests
def test_three_stages_chain_and_export_loadable_models(synthetic_root, tmp_path):
    from dvis.training.loop import train

    seg = train(make_config("segmenter", synthetic_root, tmp_path / "seg"), "segmenter", progress=False)
    trk = train(make_config("tracker", synthetic_root, tmp_path / "trk", seg.model_dir), "tracker", progress=False)
    ref = train(make_config("refiner", synthetic_root, tmp_path / "ref", trk.model_dir), "refiner", progress=False)
    assert [r.iteration for r in (seg, trk, ref)] == [4, 4, 4]
    segmenter_only, online, offline = (load_pretrained(r.model_dir) for r in (seg, trk, ref))
    assert online.refiner is None and offline.refiner is not None and segmenter_only.tracker is None
    # the frozen parts were carried over unchanged, the trained part changed
    for name, value in segmenter_only.segmenter.state_dict().items():
        assert torch.equal(value, offline.segmenter.state_dict()[name]), name
    for name, value in online.tracker.state_dict().items():
        assert torch.equal(value, offline.tracker.state_dict()[name]), name
    untrained = DVIS(config_from_dict({"segmenter": tiny_segmenter()}))
    assert any(not torch.equal(v, untrained.segmenter.state_dict()[k])
               for k, v in segmenter_only.segmenter.state_dict().items())
    video = torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8)
    result = offline([video], mode="offline")[0]
    assert result.masks.shape[-2:] == (64, 64)
    for run in (seg, trk, ref):
        rows = (run.output_dir / "metrics.csv").read_text().splitlines()
        assert rows[0].startswith("iteration,lr,loss,grad_norm,time") and len(rows) == 5
        assert (run.output_dir / "checkpoints" / "last.pt").is_file()
        assert "trained_stage" in (run.model_dir / "training.yaml").read_text()


def test_guided_matching_for_the_first_half_of_training_only(synthetic_root, tmp_path):
    from dvis.training.loop import Trainer

    init = saved_model(tmp_path / "init", ("segmenter",))
    trainer = Trainer(make_config("tracker", synthetic_root, tmp_path / "o", init), "tracker", progress=False)
    flags = []
    trainer.stage_module.register_forward_pre_hook(lambda module, args: flags.append(args[1]))
    trainer.train()
    assert flags == [True, True, False, False]  # max_iter 4, loss.guided_fraction 0.5


def test_progress_bar_shows_loss_and_eta(synthetic_root, tmp_path, capsys):
    from dvis.training.loop import train

    train(make_config("segmenter", synthetic_root, tmp_path / "o", solver={"max_iter": 2}), "segmenter", progress=True)
    err = capsys.readouterr().err
    assert "train segmenter" in err and "loss=" in err and "2/2" in err and "<" in err  # tqdm: elapsed<remaining
