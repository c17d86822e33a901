"""benchmarks/figures.py: what it reads from the evaluation JSONs, how it finds occlusions, and that
its Figures section survives docs/results.md being regenerated (the plotting itself needs
matplotlib, an optional extra, and is run by hand)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import ablations  # noqa: E402
import figures  # noqa: E402


def test_evaluation_file_names_give_variant_and_mode():
    assert figures.variant_name("minvis-minvis") == ("minvis", "minvis")
    assert figures.variant_name("refiner-seed1-offline") == ("refiner", "offline")
    assert figures.variant_name("no-long-term-seed0-offline") == ("no-long-term", "offline")
    assert figures.variant_name("refiner-seed2-clip20") == ("refiner", "clip20")
    assert figures.variant_title("dvis", "online") == "DVIS online (tracker)"
    assert figures.variant_name("oracle-oracle") == ("oracle", "oracle")
    assert figures.variant_name("per-frame-per-frame") == ("per-frame", "per-frame")
    assert figures.variant_title("oracle", "oracle") == "oracle association (bound)"


def test_read_evaluations_groups_seeds_and_orders_the_paper_first(tmp_path):
    for stem, ap in (("minvis-minvis", 0.1), ("dvis-seed0-online", 0.2), ("dvis-seed1-online", 0.3),
                     ("standard-ca-seed0-online", 0.05), ("refiner-seed0-offline", 0.4)):
        (tmp_path / f"{stem}.json").write_text(json.dumps({"AP": ap}))
    (tmp_path / "meta.json").write_text("{}")
    runs = figures.read_evaluations(tmp_path)
    assert [r["AP"] for r in runs[("dvis", "online")]] == [0.2, 0.3]
    assert sorted(runs, key=figures.occlusion_order) == [
        ("minvis", "minvis"), ("dvis", "online"), ("refiner", "offline"), ("standard-ca", "online")]


def test_occlusion_gaps_need_a_clear_view_on_both_sides():
    ratios = [0.1, 0.2, 0.8, 0.95, None, 0.5, 0.1, 0.9, 0.9]
    # frames 2-5 are not clearly visible (None: outside the frame counts as not visible), 6 is again;
    # the last run never comes back into view
    assert figures.occlusion_gaps(ratios) == [(1, 2, 5, 6)]
    assert figures.occlusion_gaps([0.9, 0.1]) == []


def test_the_figures_section_replaces_itself_and_survives_the_report(tmp_path, monkeypatch):
    target = tmp_path / "results.md"
    target.write_text("# Results\n\ntables\n")
    first = figures.section("caption A", "No case found")
    figures.put_section(first, target)
    figures.put_section(figures.section("caption B", "No case found"), target)
    text = target.read_text()
    assert text.count(figures.BEGIN) == 1 and "caption B" in text and "caption A" not in text
    assert text.startswith("# Results\n\ntables\n")
    # benchmarks/ablations.py report includes the section written by figures.py
    monkeypatch.setattr(ablations, "ROOT", tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "figures.md").write_text(first)
    plan = ablations.Plan(tmp_path / "work", tmp_path / "seg", tmp_path / "heldout", [0])
    plan.heldout.mkdir(parents=True)
    (plan.heldout / "annotations.json").write_text(json.dumps({
        "videos": [{"id": 1, "file_names": ["a"] * 4}], "annotations": [{"occlusion_level": "heavy"}]}))
    report = ablations.report(plan, {"walls": {}, "total": 0.0, "jobs": 1, "command": "x"})
    assert report.rstrip().endswith(figures.END) and "caption A" in report


def test_committed_docs_show_the_figures():
    root = Path(__file__).resolve().parent.parent
    results = (root / "docs" / "results.md").read_text()
    assert figures.BEGIN in results and "images/ap_by_occlusion.png" in results
    assert (root / "benchmarks" / "results" / "figures.md").read_text() in results
    for name in ("ap_by_occlusion.png", "overlay_demo_1.png", "overlay_demo_2.png", "overlay_demo_3.png"):
        size = (root / "docs" / "images" / name).stat().st_size
        assert 0 < size < 150_000, name
    readme = (root / "README.md").read_text()
    assert all(f"docs/images/overlay_demo_{n}.png" in readme for n in (1, 2, 3))
