"""Shared fixtures of the inference tests: tiny random models and small synthetic videos."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from dvis.data.writer import VideoWriter
from dvis.modeling.dvis import DVIS, DVISConfig
from dvis.modeling.io import save_pretrained
from test_model_io import tiny_config


def tiny_model(num_classes: int = 3, seed: int = 0, online_only: bool = False) -> DVIS:
    config: DVISConfig = tiny_config()
    config.segmenter.num_classes = num_classes
    config.tracker.num_classes = num_classes
    config.refiner = None if online_only else dataclasses.replace(config.refiner, num_classes=num_classes)
    config.inference = dataclasses.replace(config.inference, mode="online" if online_only else "offline",
                                           thing_classes=tuple(range(num_classes // 2)))
    torch.manual_seed(seed)
    return DVIS(config).eval()


def save_tiny_model(folder, num_classes: int = 6, online_only: bool = False):
    save_pretrained(tiny_model(num_classes, online_only=online_only), folder)
    return folder


def random_frames(count: int, height: int = 40, width: int = 56, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def write_frame_folder(folder, frames) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")


def write_video(path, frames, fps: float = 10.0) -> None:
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)


def write_faststart_mp4(path, frames, fps: int = 25) -> None:
    """An mp4 with its index (moov) first, so that a truncated copy still opens."""
    import av

    container = av.open(str(path), "w", options={"movflags": "faststart"})
    stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = "yuv420p"
    for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
