"""pytest plugin for benchmarks/gpu_check.sh: run the golden tests on ``DVIS_TEST_DEVICE`` (e.g. cuda).

    DVIS_TEST_DEVICE=cuda PYTHONPATH=src:benchmarks python -m pytest -p gpu_plugin tests/test_segmenter.py ...

New tensors and modules are created on that device (``torch.set_default_device``) and
``torch.load`` maps every golden file there, so the tests run unchanged. TF32 is switched off:
the goldens' 1e-4 tolerances are for float32 arithmetic. Without the variable it does nothing.
"""

from __future__ import annotations

import os

import torch


def pytest_configure(config) -> None:
    device = os.environ.get("DVIS_TEST_DEVICE")
    if not device:
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_default_device(device)
    original = torch.load

    def load_on_device(*args, **kwargs):
        kwargs["map_location"] = device
        return original(*args, **kwargs)

    torch.load = load_on_device
