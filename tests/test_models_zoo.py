"""``dvis models`` and docs/models.md: every released checkpoint maps to a preset, a file name and
a command that runs it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dvis.cli import build_parser, main
from dvis.compat.presets import PRESETS
from dvis.compat.release_zoo import BY_PRESET, DVIS_FOLDER, RELEASED

DOC = Path(__file__).resolve().parent.parent / "docs" / "models.md"


def test_every_released_checkpoint_names_an_existing_preset_once():
    assert len(RELEASED) == 20 and len(BY_PRESET) == 20
    assert all(c.preset in PRESETS for c in RELEASED)
    assert sum(PRESETS[c.preset].task == "vps" for c in RELEASED) == 4


@pytest.mark.parametrize("checkpoint", RELEASED, ids=lambda c: c.preset)
def test_file_names_follow_the_presets_mode_dataset_and_backbone(checkpoint):
    preset = PRESETS[checkpoint.preset]
    name = checkpoint.file.lower()
    backbone = {"r50": "r50", "swin-l": "swinl"}[preset.backbone]
    assert name.endswith(".pth") and backbone in name and preset.mode in name
    assert ("720p" in name) == ("720p" in checkpoint.preset and preset.dataset != "vipseg")  # VIPSeg: always 720p
    assert preset.dataset in name


def test_reported_numbers_are_the_releases():
    """A few rows written out by hand from the release's MODEL_ZOO.md."""
    assert BY_PRESET["dvis-offline-ovis-r50"].metrics == (("AP", 33.7), ("AP50", 59.6), ("AP75", 33.7))
    assert BY_PRESET["dvis-offline-ovis-swinl-720p"].headline == "AP 50.0"
    assert BY_PRESET["dvis-online-ytvis21-swinl"].metrics[0] == ("AP", 58.6)
    assert BY_PRESET["dvis-offline-vipseg-swinl"].metrics == (("VPQ", 57.6), ("VPQ_thing", 59.9), ("VPQ_stuff", 55.5))
    assert BY_PRESET["minvis-vipseg-swinl"].headline == "not reported"
    assert all(c.download == DVIS_FOLDER for c in RELEASED if not c.preset.startswith("minvis"))


def doc_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            rows[cells[1].strip("`")] = cells
    return rows


def test_docs_table_has_every_checkpoint_with_its_file_numbers_and_command():
    rows = doc_rows()
    assert set(rows) == set(BY_PRESET)
    for preset, (file, _, numbers, download, command) in rows.items():
        checkpoint = BY_PRESET[preset]
        assert file == f"`{checkpoint.file}`" + ("" if checkpoint.name_confirmed else " \\*")
        expected = " / ".join(f"{v:.1f}" for _, v in checkpoint.metrics) or "not reported"
        assert numbers == expected
        assert download == "DVIS folder (Baidu or Feishu)" or download == checkpoint.download
        argv = shlex.split(command.strip("`"))
        assert argv[:2] == ["dvis", "segment"]
        args = build_parser().parse_args(argv[1:])
        assert args.model == preset and args.weights == checkpoint.file and args.inputs == ["video.mp4"]


def test_dvis_models_lists_the_shipped_model_and_every_preset(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == ["name", "task", "dataset", "backbone", "mode", "classes", "weights"]
    by_name = {line.split()[0]: line for line in lines[1:] if line and not line.startswith("Run")}
    assert set(by_name) == {"synthetic-demo", *PRESETS}
    demo = by_name["synthetic-demo"].split()
    assert demo[1:4] == ["vis", "synthetic", "r50"] and "offline" in demo and "6" in demo
    assert "shipped in the package" in by_name["synthetic-demo"]
    released = by_name["dvis-offline-ovis-swinl"]
    assert re.search(r"vis\s+ovis\s+swin-l\s+offline\s+25\s+released: DVIS_offline_ovis_swinl.pth, AP 48.8", released)
    assert "none released" in by_name["minvis-ovis-r50"]
    assert re.search(r"vps\s+vipseg\s+swin-l\s+online\s+124", by_name["dvis-online-vipseg-swinl"])
