"""The public API: every name of ``dvis.__all__`` imports from ``dvis``; ``import dvis`` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import dvis


@pytest.mark.parametrize("name", dvis.__all__)
def test_every_public_name_resolves(name):
    assert getattr(dvis, name) is not None


def test_public_names_are_the_defining_modules_objects():
    from dvis.compat.checkpoint import load_official
    from dvis.inference.predictor import VideoPredictor
    from dvis.modeling.dvis import DVIS

    assert dvis.DVIS is DVIS and dvis.VideoPredictor is VideoPredictor and dvis.load_official is load_official
    assert set(dvis.__all__) <= set(dir(dvis))


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'segmentor'"):
        dvis.segmentor  # noqa: B018
    with pytest.raises(ImportError):
        exec("from dvis import segmentor", {})


def test_import_dvis_does_not_load_torch():
    code = "import sys, dvis; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
