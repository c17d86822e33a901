"""``dvis segment``: many videos -> one results file; resumable, shardable with ``torchrun``.

Start-up checks everything a user can get wrong before writing anything: the inputs (every video
is opened), that the output folder can be created and written, the model name and its files,
the model itself (loaded) with the requested mode, and the categories. Only then is the output
folder created.

Per video the outputs are written first (``<video>.mp4`` overlay, VPS PNGs, VSS PNGs), then a
partial record ``OUT/.partial/<video>.json`` (atomically, :mod:`dvis.inference.partials`) that
marks the video as done. A rerun skips videos whose partial is usable: same options and model
files (sha256), the same input (number of frame files and a sha256 of their names, sizes and
contents), the recorded outputs present, and the overlay rendered if this run renders.
Rank r of ``WORLD_SIZE`` processes videos ``r, r + W, ...``; rank 0 then waits until every
video's partial is usable (saying why one is not) and merges them into ``OUT/results.json``
(VIS) or ``OUT/pred.json`` (VPS), each written atomically.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from dvis.errors import DVISError, InputError
from dvis.fileio import atomic_write_bytes
from dvis.evaluation.writers import VIPSegWriter, write_ytvis_results
from dvis.inference.categories import Categories, json_categories
from dvis.inference.inputs import InputSet, VideoJob, resolve_inputs
from dvis.inference.partials import NO_PARTIAL, PARTIAL_DIR, Partials, run_fingerprint
from dvis.inference.registry import locate_model, resolve_device
from dvis.inference.render import OVERLAY_QUEUE, OverlayVideo, track_colour, vis_overlay_entries
from dvis.inference.results import select_entries
from dvis.modeling.pipeline import VideoAnalysis

__all__ = ["PARTIAL_DIR", "SegmentOptions", "SegmentRun", "check_output_dir", "create_output_dir"]


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
    quiet: bool = False  # no progress bars (``--no-progress``)
    max_num: int | None = None  # VIS: (query, class) pairs kept per video (default: the model's)
    score_threshold: float = 0.0  # VIS: results.json keeps entries with score >= this
    one_class_per_track: bool = False  # VIS: results.json keeps each track's best entry only
    precision: str = "fp32"  # segmenter: fp32 (exact) or bf16 (fast path)
    io_overlap: bool = True  # decode / draw / encode in background threads while the model runs
    compile: bool = False  # the segmenter's network through torch.compile


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
    """Make sure ``out`` can be created and written, creating nothing (InputError otherwise).

    Probes the folder itself when it exists, else its nearest existing parent.
    """
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"output folder {out} is not writable: {existing} is not a folder")
    _probe(out, existing)


def create_output_dir(out: Path) -> None:
    """Create ``out`` (and its parents) and check that a file can be written there."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"output folder {out} is not writable: {err.strerror or err}") from None
    _probe(out, out)


def _probe(out: Path, folder: Path) -> None:
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
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
        self.predictor = None
        self.categories: Categories | None = None
        self.partials: Partials | None = None
        self._step = lambda frames: None  # pass-2 progress
        self._sources: dict[str, dict] = {}  # video name -> fingerprint of its input (once per run)
        self._jobs: dict[str, VideoJob] = {}

    # ------------------------------------------------------------------------------- driver
    def run(self) -> int:
        resolve_device(self.options.device)  # a bad --device fails before any work
        started = time.monotonic()
        inputs = resolve_inputs(self.options.inputs, self.options.frames_root)
        rank, world = shard_from_env()
        check_output_dir(self.out)
        self.partials = self._partials()
        self._jobs = {job.name: job for job in inputs.jobs}
        mine = inputs.jobs[rank::world]
        todo = [job for job in mine if not self._is_done(job)]
        if len(todo) < len(mine):
            log(f"skipping {len(mine) - len(todo)} video(s) already done (partials in {self.partials.folder})")
        sources = self._start(todo, inputs, rank, world) if todo else []
        create_output_dir(self.out)
        frames = 0
        for number, (job, source) in enumerate(sources, 1):
            frames += self._process(job, source, f"[{number}/{len(sources)}] {job.name}")
        log(_summary(len(sources), len(mine) - len(todo), frames, time.monotonic() - started))
        if rank != 0:
            log(f"rank {rank}: done; rank 0 merges the results")
            return 0
        self._wait_for(inputs.jobs)
        self._merge(inputs)
        return 0

    def _partials(self) -> Partials:
        """The run's partials; checks the model name and files and hashes them (once per run)."""
        o = self.options
        fingerprint = run_fingerprint(o, locate_model(o.model, o.weights))
        return Partials(self.out, fingerprint, o.render_threshold if o.render else None)

    def _start(self, todo: list[VideoJob], inputs: InputSet, rank: int, world: int) -> list[tuple]:
        """Load the model (mode checked), decide the categories, open every video to process."""
        self._load_model(rank, world)
        self.categories = self._categories(inputs)
        return [(job, job.open()) for job in todo]  # fails early on unreadable inputs

    def _load_model(self, rank: int, world: int) -> None:
        from dvis.inference.predictor import VideoPredictor

        device = self.options.device
        if world > 1 and device in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available():
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
        o = self.options
        from dvis.inference.predictor import vps_warning

        self.predictor = VideoPredictor.from_pretrained(
            o.model, device=device, weights=o.weights, spill_dir=o.spill_dir, spill_dtype=o.spill_dtype,
            mode=o.mode, task=o.task, clip_len=o.clip_len, max_num=o.max_num, precision=o.precision,
            read_ahead=None if o.io_overlap else 0, compile=o.compile)
        config = self.predictor.options()  # a mode the model cannot run fails here, before any output
        if vps_warning(config):
            log(f"warning: {vps_warning(config)}")

    def _categories(self, inputs: InputSet) -> Categories:
        """Class index -> dataset category id and name (:mod:`dvis.inference.categories`)."""
        if inputs.categories is None:
            return self.predictor.categories
        num_classes = self.predictor.model.config.segmenter.num_classes
        return json_categories(inputs.categories, num_classes, inputs.sources[0])

    # ------------------------------------------------------------------------------ partials
    def _source(self, name: str) -> dict:
        if name not in self._sources:
            self._sources[name] = self._jobs[name].fingerprint()
        return self._sources[name]

    def _is_done(self, job: VideoJob) -> bool:
        problem = self.partials.problem(job.name, self._source(job.name))
        if problem not in (None, NO_PARTIAL):
            log(f"{job.name}: recomputing ({problem})")
        return problem is None

    def _wait_for(self, jobs: list[VideoJob]) -> None:
        """Until every video's partial is usable (or --merge-timeout passes: DVISError)."""
        timeout = self.options.merge_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        pending, reported, announced = [job.name for job in jobs], {}, False
        while True:
            problems = {name: self.partials.problem(name, self._source(name)) for name in pending}
            pending = [name for name, problem in problems.items() if problem is not None]
            if not pending:
                return
            self._report_rejected(problems, reported)
            if deadline is not None and time.monotonic() >= deadline:
                raise DVISError(_not_merged(pending, problems, self.partials.folder))
            if not announced:
                log(f"rank 0: waiting for {len(pending)} video(s) from other ranks")
                announced = True
            time.sleep(1.0)

    @staticmethod
    def _report_rejected(problems: dict, reported: dict) -> None:
        """One warning line per video and reason for partials that exist but cannot be used."""
        for name, problem in problems.items():
            if problem not in (None, NO_PARTIAL) and reported.get(name) != problem:
                log(f"warning: rank 0: not using the partial of {name}: {problem}")
                reported[name] = problem

    def _merge(self, inputs: InputSet) -> None:
        partials = [self.partials.read(job.name) for job in inputs.jobs]
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
    def _bar(self, total: int | None, label: str) -> tqdm:
        return tqdm(total=total, unit="frame", desc=label, disable=self.options.quiet, file=sys.stderr,
                    dynamic_ncols=True)

    def _process(self, job: VideoJob, source, label: str) -> int:
        """Segments one video and writes its outputs and partial; returns its number of frames."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with self._bar(source.num_frames, f"{label} 1/2 segment") as bar, \
                    self.predictor.analyse(source, progress=bar.update) as analysis:
                bar.close()
                for warning in caught:
                    log(f"warning: {warning.message}")
                warnings.simplefilter("ignore")  # a second decode repeats the same warnings
                what = "outputs + overlay" if self.options.render else "outputs"
                with self._bar(analysis.num_frames, f"{label} 2/2 {what}") as bar:
                    self._step = bar.update
                    data, outputs = self._write_outputs(job, source, analysis)
        overlay = {"file": f"{job.name}.mp4", "render_threshold": self.options.render_threshold}
        self.partials.write(job.name, {
            "name": job.name, "video_id": job.video_id, "source": self._source(job.name),
            "task": analysis.config.task,
            "num_frames": analysis.num_frames, "outputs": outputs,
            "overlay": overlay if self.options.render else None, "data": data})
        return analysis.num_frames

    def _write_outputs(self, job: VideoJob, source, analysis: VideoAnalysis) -> tuple[Any, list[str]]:
        """Writes the video's files; returns (its partial's data, the files written besides the overlay).
        ``self._step(n)`` (the pass-2 progress bar) is called as the overlay writes each frame."""
        queue = OVERLAY_QUEUE if self.options.io_overlap else 0
        with OverlayVideo(self.out / f"{job.name}.mp4", source, self.options.render, queue, self._step) as overlay:
            task = analysis.config.task
            if task == "vis":
                return self._vis(job, analysis, overlay), []
            if task == "vps":
                return self._vps(job, source, analysis, overlay)
            return self._vss(job, source, analysis, overlay)

    def _vis(self, job: VideoJob, analysis: VideoAnalysis, overlay: OverlayVideo) -> list[dict]:
        """results.json entries: the options' selection; the overlay: per track its best entry with
        score >= --render-threshold, labelled ``id class score``."""
        from dvis.inference.results import TrackedInstances

        instances = None
        names, o = self.categories.names, self.options
        for _, chunk in analysis.vis_chunks():
            if instances is None:
                kept = select_entries(chunk.scores, chunk.ids, o.score_threshold, o.one_class_per_track)
                instances = TrackedInstances.empty_like(chunk, analysis.output_size, kept)
                shown, colours, texts = vis_overlay_entries(chunk.scores, chunk.labels, chunk.ids, names,
                                                            o.render_threshold)
            instances.add_frames(chunk.masks[kept])
            for t in range(chunk.masks.shape[1]):
                overlay.add(chunk.masks[shown, t].numpy(), colours, texts)
        return instances.to_ytvis(job.video_id, self.categories.ids, video_name=job.name)

    def _vps(self, job: VideoJob, source, analysis: VideoAnalysis, overlay: OverlayVideo) -> tuple[dict, list[str]]:
        plan = analysis.vps_plan()
        ids = self.categories.ids
        segments = [{"id": s["id"], "category_id": ids[s["category_id"]], "isthing": int(s["isthing"])}
                    for s in plan.segments_infos]
        colours = [track_colour(track) for track in plan.ids]
        texts = [f"{track} {self.categories.names[s['category_id']]}"
                 for track, s in zip(plan.ids, plan.segments_infos)]
        names = job.frame_names(source, analysis.num_frames)
        writer = VIPSegWriter(self.out)
        for start, panoptic in analysis.vps_chunks(plan):
            maps = panoptic.numpy()
            writer.add_video(job.name, names[start:start + len(maps)], maps, segments)
            for frame_ids in maps:
                overlay.add(np.stack([frame_ids == s["id"] for s in segments]) if segments else None, colours, texts)
        frames = [frame for entry in writer.annotations for frame in entry["annotations"]]
        outputs = [f"pan_pred/{job.name}/{frame['file_name']}" for frame in frames]
        return {"video_id": job.name, "annotations": frames}, outputs

    def _vss(self, job: VideoJob, source, analysis: VideoAnalysis, overlay: OverlayVideo) -> tuple[dict, list[str]]:
        names = job.frame_names(source, analysis.num_frames)
        classes = list(range(len(self.categories)))
        colours = [track_colour(k) for k in classes]
        for start, semantic in analysis.vss_chunks():
            for offset, classes_map in enumerate(semantic.numpy()):
                atomic_write_bytes(self.out / "vss" / job.name / f"{names[start + offset]}.png", _png(classes_map))
                present = [k for k in classes if (classes_map == k).any()]
                overlay.add(np.stack([classes_map == k for k in present]) if present else None,
                            [colours[k] for k in present], [self.categories.names[k] for k in present])
        return {"video_id": job.name, "frames": names}, [f"vss/{job.name}/{name}.png" for name in names]


def _not_merged(pending: list[str], problems: dict, folder: Path) -> str:
    shown = "; ".join(f"{name}: {problems[name]}" for name in pending[:5])
    return (f"results not merged: {len(pending)} video(s) have no usable partial result in {folder} "
            f"({shown}{'; ...' if len(pending) > 5 else ''}); rerun the missing ranks, then rerun rank 0")


def _png(class_map: np.ndarray) -> bytes:
    """(H, W) class indices -> PNG bytes (8-bit below 256 classes, else 16-bit)."""
    image = Image.fromarray(class_map.astype(np.uint8)) if class_map.max(initial=0) < 256 else \
        Image.fromarray(class_map.astype(np.uint16))
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _summary(videos: int, skipped: int, frames: int, seconds: float) -> str:
    """The end-of-run line: videos processed, frames, frames/s, wall time (start-up included)."""
    rate = f", {frames / seconds:.1f} frames/s" if frames and seconds > 0 else ""
    done = f" ({skipped} already done)" if skipped else ""
    return f"segmented {videos} video(s){done}, {frames} frames in {seconds:.1f} s{rate}"
