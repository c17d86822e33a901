"""Every ```python snippet of README.md and docs/*.md runs as written.

Each snippet runs on its own (a fresh namespace) in a folder holding the files the docs name:
``video.mp4`` / ``clip.mp4`` (short synthetic videos), ``DVIS_offline_ovis_r50.pth`` (a stand-in
for the released checkpoint: random weights in the release's key names and shapes, from
``tests/data/official_layout``, in its ``{"model": ...}`` container) and ``configs/`` (the repo's).
A snippet that cannot run here is marked in the markdown with a visible line right above its fence,
``<!-- snippet: skip REASON -->``; such a skip is reported with its reason and counted
(:data:`EXPECTED_SKIPS`), so a new skip or a lost snippet fails the inventory test.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from golden_files import DATA
from inference_helpers import write_video

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*snippet:\s*skip\s+(?P<reason>\S.*?)\s*-->")
EXPECTED_SKIPS = 0  # snippets marked `<!-- snippet: skip ... -->` in the docs
RELEASE_FILE = "DVIS_offline_ovis_r50.pth"
LAYOUT = DATA / "official_layout" / "official_keys_ovis_r50_offline.json"


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    skip: str | None  # the marker's reason

    @property
    def name(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}"


def snippets_of(path: Path) -> list[Snippet]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, start = [], None
    for number, line in enumerate(lines):
        stripped = line.strip()
        if start is None and stripped == "```python":
            start = number
        elif start is not None and stripped == "```":
            previous = lines[start - 1].strip() if start else ""
            marker = SKIP.fullmatch(previous)
            found.append(Snippet(path, start + 1, "\n".join(lines[start + 1:number]) + "\n",
                                 marker["reason"] if marker else None))
            start = None
    if start is not None:
        raise AssertionError(f"{path}:{start + 1}: ```python block is never closed")
    return found


SNIPPETS = [snippet for path in DOCS for snippet in snippets_of(path)]


def release_standin(path: Path, seed: int = 0) -> None:
    """Random weights with the released checkpoint's key names and shapes (one random row per tensor,
    broadcast, so the file stays small); batch-norm statistics are 0 / 1 so that the model runs."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in json.loads(LAYOUT.read_text())["keys"].items():
        if key.endswith("running_var"):
            state[key] = torch.ones(shape)
        elif key.endswith("running_mean"):
            state[key] = torch.zeros(shape)
        else:
            row = 0.02 * torch.randn(shape[0], generator=generator)
            state[key] = row.view(-1, *[1] * (len(shape) - 1)).expand(shape)
    torch.save({"model": state, "iteration": 19999}, path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from dvis.data.synthetic import render_video

    folder = tmp_path_factory.mktemp("snippets")
    video = render_video(seed=7, frames=6, height=128, width=128, objects=(2, 6), occlusion="heavy")
    write_video(folder / "clip.mp4", list(video.frames), fps=10)
    write_video(folder / "video.mp4", list(video.frames[:2, :64, :96]), fps=10)
    release_standin(folder / RELEASE_FILE)
    os.symlink(ROOT / "configs", folder / "configs")
    return folder


def test_the_docs_have_snippets_and_every_skip_is_marked_and_counted():
    assert len(SNIPPETS) >= 6
    assert {s.path.name for s in SNIPPETS} >= {"README.md", "usage.md", "training.md", "presets.md", "models.md"}
    skipped = [s for s in SNIPPETS if s.skip]
    assert len(skipped) == EXPECTED_SKIPS, [f"{s.name}: {s.skip}" for s in skipped]
    for path in DOCS:  # a marker must sit right above a python fence, or it is a typo
        text = path.read_text(encoding="utf-8")
        assert len(SKIP.findall(text)) == sum(1 for s in SNIPPETS if s.path == path and s.skip), path


def run_snippet(snippet: Snippet) -> dict:
    namespace: dict = {"__name__": "__snippet__"}
    exec(compile(snippet.code, snippet.name, "exec"), namespace)
    return namespace


def test_a_broken_snippet_fails(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n\n```python\nimport dvis\ndvis.no_such_thing\n```\n")
    [snippet] = snippets_of(doc)
    with pytest.raises(AttributeError):
        run_snippet(Snippet(snippet.path, snippet.line, snippet.code, None))
    doc.write_text("<!-- snippet: skip needs a GPU -->\n```python\nx = 1\n```\n")
    assert snippets_of(doc)[0].skip == "needs a GPU"


def test_the_release_standin_has_the_release_layout(workdir):
    state = torch.load(workdir / RELEASE_FILE, weights_only=True)["model"]
    layout = json.loads(LAYOUT.read_text())["keys"]
    assert set(state) == set(layout) and all(list(state[k].shape) == layout[k] for k in layout)
    assert (workdir / RELEASE_FILE).stat().st_size < 20_000_000


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.name)
def test_snippet_runs(snippet, workdir, monkeypatch):
    if snippet.skip:
        pytest.skip(f"marked in {snippet.name}: {snippet.skip}")
    monkeypatch.chdir(workdir)
    namespace = run_snippet(snippet)
    assert namespace  # ran to the end
    if "results" in namespace and snippet.path.name == "README.md":
        assert isinstance(namespace["results"], (list, tuple)) and len(namespace["results"]) == 1
    if "instances" in namespace:
        instances = namespace["instances"]
        assert instances.num_frames in (2, 6) and np.all(instances.scores.numpy() >= 0)
