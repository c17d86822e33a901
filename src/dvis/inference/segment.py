"""``dvis segment``: many videos -> one results file; resumable, shardable with ``torchrun``.

Per video the outputs are written first (``<video>.mp4`` overlay, VPS PNGs, VSS PNGs), then a
partial record ``OUT/.partial/<video>.json`` (atomically) that marks the video as done. A rerun
with the same options skips videos whose partial exists. Rank r of ``WORLD_SIZE`` processes
videos ``r, r + W, ...``; rank 0 then waits until every video's partial exists and merges them
into ``OUT/results.json`` (VIS) or ``OUT/pred.json`` (VPS), each written atomically.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from dvis.errors import DataError, DVISError, InputError
from dvis.evaluation.writers import VIPSegWriter, atomic_write_bytes, atomic_write_json, write_ytvis_results
from dvis.inference.engine import VideoAnalysis
from dvis.inference.inputs import InputSet, VideoJob, resolve_inputs
from dvis.inference.render import render_frame, track_colour

PARTIAL_DIR = ".partial"


@dataclass
class SegmentOptions:
    inputs: list[str]
    out: str
    model: str
    weights: str | None = None
    mode: str | None = None
    task: str | None = None
    clip_len: int | None = None
    device: str = "auto"
    render: bool = True
    frames_root: str | None = None
    spill_dir: str | None = None
    spill_dtype: str = "float32"
    render_threshold: float = 0.3
    merge_timeout: float | None = None
    quiet: bool = False

    def fingerprint(self) -> dict:
        """What a finished video's partial must have been computed with to be reused."""
        keys = ("model", "weights", "mode", "task", "clip_len", "spill_dtype")
        return {**{k: asdict(self)[k] for k in keys}, "model_files": _model_stamp(self.model, self.weights)}


def shard_from_env() -> tuple[int, int]:
    """(rank, world size) from ``RANK`` / ``WORLD_SIZE`` (set by torchrun); (0, 1) when unset."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise InputError(f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
                         "must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK must be in [0, WORLD_SIZE); got RANK={rank}, WORLD_SIZE={world}")
    return rank, world


def check_output_dir(out: Path) -> None:
    """Create ``out`` and make sure a file can be written there (InputError otherwise)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"output folder {out} is not writable: {err.strerror or err}") from None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class SegmentRun:
    """One ``dvis segment`` invocation."""

    def __init__(self, options: SegmentOptions) -> None:
        self.options = options
        self.out = Path(options.out)
        self.partials = self.out / PARTIAL_DIR
        self.predictor = None

    # ------------------------------------------------------------------------------- driver
    def run(self) -> int:
        inputs = resolve_inputs(self.options.inputs, self.options.frames_root)
        check_output_dir(self.out)
        rank, world = shard_from_env()
        mine = inputs.jobs[rank::world]
        todo = [job for job in mine if not self._is_done(job)]
        if len(todo) < len(mine):
            log(f"skipping {len(mine) - len(todo)} video(s) already done (partials in {self.partials})")
        if todo:
            self._load_model(rank, world)
            self.category_ids, self.names = self._categories(inputs)
            sources = [(job, job.open()) for job in todo]  # fails early on unreadable inputs
            for number, (job, source) in enumerate(sources, 1):
                self._process(job, source, f"[{number}/{len(sources)}] {job.name}")
        if rank != 0:
            log(f"rank {rank}: done; rank 0 merges the results")
            return 0
        self._wait_for(inputs.jobs)
        self._merge(inputs)
        return 0

    def _load_model(self, rank: int, world: int) -> None:
        from dvis.inference.predictor import VideoPredictor

        device = self.options.device
        if world > 1 and device in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available():
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
        o = self.options
        self.predictor = VideoPredictor.from_pretrained(
            o.model, device=device, weights=o.weights, spill_dir=o.spill_dir, spill_dtype=o.spill_dtype,
            mode=o.mode, task=o.task, clip_len=o.clip_len)

    def _categories(self, inputs: InputSet) -> tuple[list[int], list[str]]:
        """Class index -> (dataset category id, display name)."""
        num_classes = self.predictor.model.config.segmenter.num_classes
        if inputs.categories is not None:
            if len(inputs.categories) != num_classes:
                raise DataError(f"{inputs.sources[0]} has {len(inputs.categories)} categories but the model "
                                f"predicts {num_classes} classes; they must correspond one to one (sorted by id)")
            return [c["id"] for c in inputs.categories], [c["name"] for c in inputs.categories]
        classes = _model_classes(self.options.model, num_classes)
        if classes is not None:
            return classes
        return list(range(1, num_classes + 1)), [f"class {k}" for k in range(1, num_classes + 1)]

    # ------------------------------------------------------------------------------ partials
    def _partial_path(self, job: VideoJob) -> Path:
        return self.partials / f"{job.name}.json"

    def _read_partial(self, job: VideoJob) -> dict | None:
        try:
            return json.loads(self._partial_path(job).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _is_done(self, job: VideoJob) -> bool:
        partial = self._read_partial(job)
        if partial is None:
            return False
        if partial.get("options") != self.options.fingerprint():
            log(f"{job.name}: recomputing (its partial was made with other options: {partial.get('options')})")
            return False
        return True

    def _wait_for(self, jobs: list[VideoJob]) -> None:
        timeout = self.options.merge_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        announced = False
        while True:
            missing = [job.name for job in jobs if not self._is_done_quiet(job)]
            if not missing:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise DVISError(f"results not merged: {len(missing)} video(s) have no partial result in "
                                f"{self.partials} ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); "
                                "rerun the missing ranks, then rerun rank 0")
            if not announced:
                log(f"rank 0: waiting for {len(missing)} video(s) from other ranks")
                announced = True
            time.sleep(1.0)

    def _is_done_quiet(self, job: VideoJob) -> bool:
        partial = self._read_partial(job)
        return partial is not None and partial.get("options") == self.options.fingerprint()

    def _merge(self, inputs: InputSet) -> None:
        partials = [self._read_partial(job) for job in inputs.jobs]
        task = partials[0]["task"] if partials else self.options.task
        if task == "vis":
            path = write_ytvis_results(self.out / "results.json", [e for p in partials for e in p["data"]])
        elif task == "vps":
            writer = VIPSegWriter(self.out)
            writer.annotations = [p["data"] for p in partials]
            path = writer.close()
        else:
            path = self.out / "vss"
        log(f"wrote {path} ({len(partials)} video(s))")

    # ------------------------------------------------------------------------------- a video
    def _process(self, job: VideoJob, source, label: str) -> None:
        with tqdm(total=source.num_frames, unit="frame", desc=label, disable=self.options.quiet,
                  file=sys.stderr, dynamic_ncols=True) as bar:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with self.predictor.analyse(source, progress=bar.update) as analysis:
                    for warning in caught:
                        log(f"warning: {warning.message}")
                    warnings.simplefilter("ignore")  # a second decode repeats the same warnings
                    data = self._write_outputs(job, source, analysis)
        partial = {"options": self.options.fingerprint(), "name": job.name, "video_id": job.video_id,
                   "task": analysis.config.task, "num_frames": analysis.num_frames, "data": data}
        atomic_write_json(self._partial_path(job), partial)

    def _write_outputs(self, job: VideoJob, source, analysis: VideoAnalysis) -> Any:
        renderer = _Renderer(self.out / f"{job.name}.mp4", source, self.options.render)
        with renderer:
            task = analysis.config.task
            if task == "vis":
                return self._vis(job, analysis, renderer)
            if task == "vps":
                return self._vps(job, source, analysis, renderer)
            return self._vss(job, source, analysis, renderer)

    def _vis(self, job: VideoJob, analysis: VideoAnalysis, renderer: "_Renderer") -> list[dict]:
        from dvis.inference.results import TrackedInstances

        instances = None
        for _, chunk in analysis.vis_chunks():
            if instances is None:
                instances = TrackedInstances.empty_like(chunk, analysis.output_size)
                shown = _best_per_track(chunk.scores, chunk.ids, self.options.render_threshold)
                colours = [track_colour(int(chunk.ids[n])) for n in shown]
                texts = [f"{self.names[int(chunk.labels[n])]} {float(chunk.scores[n]):.2f}" for n in shown]
            instances.add_frames(chunk.masks)
            for t in range(chunk.masks.shape[1]):
                renderer.add(chunk.masks[shown, t].numpy(), colours, texts)
        return instances.to_ytvis(job.video_id, self.category_ids, video_name=job.name)

    def _vps(self, job: VideoJob, source, analysis: VideoAnalysis, renderer: "_Renderer") -> dict:
        plan = analysis.vps_plan()
        segments = [{"id": s["id"], "category_id": self.category_ids[s["category_id"]], "isthing": int(s["isthing"])}
                    for s in plan.segments_infos]
        colours = [track_colour(track) for track in plan.ids]
        texts = [self.names[s["category_id"]] for s in plan.segments_infos]
        names = job.frame_names(source, analysis.num_frames)
        writer = VIPSegWriter(self.out)
        for start, panoptic in analysis.vps_chunks(plan):
            ids = panoptic.numpy()
            writer.add_video(job.name, names[start:start + len(ids)], ids, segments)
            for frame_ids in ids:
                renderer.add(np.stack([frame_ids == s["id"] for s in segments]) if segments else None, colours, texts)
        frames = [frame for entry in writer.annotations for frame in entry["annotations"]]
        return {"video_id": job.name, "annotations": frames}

    def _vss(self, job: VideoJob, source, analysis: VideoAnalysis, renderer: "_Renderer") -> dict:
        names = job.frame_names(source, analysis.num_frames)
        folder = self.out / "vss" / job.name
        classes = list(range(len(self.names)))
        colours = [track_colour(k) for k in classes]
        for start, semantic in analysis.vss_chunks():
            for offset, classes_map in enumerate(semantic.numpy()):
                atomic_write_bytes(folder / f"{names[start + offset]}.png", _png(classes_map))
                present = [k for k in classes if (classes_map == k).any()]
                renderer.add(np.stack([classes_map == k for k in present]) if present else None,
                             [colours[k] for k in present], [self.names[k] for k in present])
        return {"video_id": job.name, "frames": names}


def _model_stamp(model: str, weights: str | None) -> list:
    """(size, mtime) of the weight files, so that a retrained model does not reuse old partials."""
    from dvis.inference.registry import REGISTERED, registered_folder

    folder = registered_folder(model) if model in REGISTERED else Path(model)
    files = [folder / "model.safetensors"] + ([Path(weights)] if weights else [])
    return [[f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def _png(class_map: np.ndarray) -> bytes:
    """(H, W) class indices -> PNG bytes (8-bit below 256 classes, else 16-bit)."""
    image = Image.fromarray(class_map.astype(np.uint8)) if class_map.max(initial=0) < 256 else \
        Image.fromarray(class_map.astype(np.uint16))
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _best_per_track(scores, ids, threshold: float) -> list[int]:
    """Indices of the entries to draw: per track id its best-scoring entry with score >= threshold."""
    best: dict[int, int] = {}
    for n, (score, track) in enumerate(zip(scores.tolist(), ids.tolist())):
        if score >= threshold and track not in best:
            best[track] = n  # entries are sorted by descending score
    return sorted(best.values())


def _model_classes(model: str, num_classes: int) -> tuple[list[int], list[str]] | None:
    """Optional ``classes.json`` ([{id, name}, ...] in class-index order) of a model folder."""
    from dvis.inference.registry import REGISTERED, registered_folder

    folder = registered_folder(model) if model in REGISTERED else Path(model)
    path = folder / "classes.json"
    if not path.is_file():
        return None
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
        ids, names = [int(c["id"]) for c in classes], [str(c["name"]) for c in classes]
    except (ValueError, TypeError, KeyError) as err:
        raise DataError(f"{path}: expected a JSON list of {{'id', 'name'}} objects ({err})") from None
    if len(ids) != num_classes:
        raise DataError(f"{path} lists {len(ids)} classes but the model predicts {num_classes}")
    return ids, names


class _Renderer:
    """Writes the overlay video frame by frame, re-reading the source frames (a second decode)."""

    def __init__(self, path: Path, source, enabled: bool) -> None:
        self.path, self.source, self.enabled = path, source, enabled
        self._writer = self._frames = None

    def __enter__(self) -> "_Renderer":
        if self.enabled:
            from dvis.data.writer import VideoWriter

            self._frames = iter(self.source)
            self._writer = VideoWriter(self.path, self.source.fps).__enter__()
        return self

    def add(self, masks: np.ndarray | None, colours: list, texts: list[str]) -> None:
        if not self.enabled:
            return
        frame = next(self._frames)
        if masks is None or len(masks) == 0:
            self._writer.write(frame)
        else:
            self._writer.write(render_frame(frame, masks, colours, texts))

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self._writer.__exit__(exc_type, exc, tb)
