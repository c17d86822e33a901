"""Validation during training: AP on videos the stage never trains on, for checkpoint selection.

Every ``validation.period`` iterations (and at the end) the model runs in the stage's mode
(``minvis`` for the segmenter, ``online`` for the tracker, ``offline`` for the refiner, unless
``validation.mode`` says otherwise) over the validation videos with the predictor's own code path,
and is scored with the YouTube-VIS evaluation. The best iteration's weights are kept in
``OUTPUT_DIR/best`` and become the exported model; ``validation.csv`` logs every score.

Choices made on this split (which checkpoint to keep) are not results: report numbers on a
separate held-out split.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from dvis.errors import ConfigError
from dvis.evaluation.ytvis import evaluate_tracks
from dvis.evaluation.ytvis_data import load_ground_truth, parse_results
from dvis.modeling.dvis import DVIS
from dvis.training.config import VALIDATION_METRICS, ValidationConfig
from dvis.training.data import generate_missing

STAGE_MODES = {"segmenter": "minvis", "tracker": "online", "refiner": "offline"}


def ensure_validation_set(config: ValidationConfig) -> Path:
    """The annotation file, generated first when ``validation.synthetic`` asks for it."""
    annotations = Path(config.annotations)
    if config.synthetic is not None:
        generate_missing(annotations, config.synthetic)
    if not annotations.is_file():
        raise ConfigError(f"validation.annotations = {annotations}: file not found")
    return annotations


class Validator:
    """Scores a model on the validation videos. The frames are decoded on the first call and kept
    in memory: only the process that validates (rank 0) holds them."""

    def __init__(self, config: ValidationConfig, stage: str) -> None:
        from dvis.data.ytvis import YTVISDataset

        annotations = ensure_validation_set(config)
        image_root = Path(config.image_root) if config.image_root else annotations.parent / "JPEGImages"
        self.mode = config.mode or STAGE_MODES[stage]
        self.metric = config.metric
        self.ground_truth = load_ground_truth(annotations)
        self.dataset = YTVISDataset(annotations, image_root)
        self._videos: list[tuple[int, np.ndarray]] | None = None

    @property
    def videos(self) -> list[tuple[int, np.ndarray]]:
        """[(video_id, frames (T, H, W, 3) uint8)], decoded once, on first use."""
        if self._videos is None:
            dataset = self.dataset
            self._videos = [(dataset[i].video_id, np.stack(list(dataset[i].frames()))) for i in range(len(dataset))]
        return self._videos

    @torch.no_grad()
    def __call__(self, model: DVIS) -> dict[str, float]:
        """Metrics (fractions) of ``model`` in the validation mode; the model is left in eval mode."""
        from dvis.inference.predictor import VideoPredictor

        predictor = VideoPredictor(model, mode=self.mode, task="vis")
        entries = []
        for video_id, frames in self.videos:
            entries += predictor(frames).to_ytvis(video_id, self.ground_truth.category_ids)
        metrics = evaluate_tracks(self.ground_truth, parse_results(entries, self.ground_truth))
        values = {name: metrics[name] for name in VALIDATION_METRICS}
        if values.get(self.metric) is None:
            raise ConfigError(f"validation.metric = {self.metric!r}: not computed on this split ({values})")
        return {name: (math.nan if v is None else float(v)) for name, v in values.items()}


class ValidationLog:
    """``validation.csv``: iteration, every logged metric; rows after a resumed iteration dropped."""

    def __init__(self, path: Path, start_iteration: int) -> None:
        self.path = path
        self.rows: list[dict[str, float]] = []
        if path.is_file():
            with path.open(newline="") as handle:
                self.rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)
                             if int(float(row["iteration"])) <= start_iteration]

    def append(self, row: dict[str, float], write) -> None:
        self.rows.append(row)
        fields = ["iteration", *VALIDATION_METRICS]
        text = ",".join(fields) + "\n" + "".join(
            ",".join(repr(float(r[f])) if f != "iteration" else str(int(r[f])) for f in fields) + "\n"
            for r in self.rows)
        write(self.path, text)
