"""The training loop shared by the three stages.

One optimizer step = ``accumulation`` micro-steps of ``clips_per_gpu`` clips on each of the
``world_size`` processes, so the effective batch is ``clips_per_gpu x world_size x accumulation``
clips (``solver.batch_size``; ``accumulation`` is derived from it and must be a whole number).

Per step: loss terms -> all-reduced for logging and the finiteness check (a NaN/Inf stops every
process with :class:`NonFiniteLossError` naming the iteration and the term) -> backward (DDP
averages gradients; no sync on the first micro-steps) -> AMP unscale -> clip the L2 norm of all
trained gradients together to ``clip_grad_norm`` (a non-finite norm stops training as well, unless
AMP's GradScaler skips the step) -> AdamW -> step-decay schedule. Rank 0 shows a
tqdm bar with the loss and ETA, appends to ``metrics.csv`` every ``log_period`` steps, writes
``checkpoints/last.pt`` every ``checkpoint_period`` steps and at the end, and exports the stage
model to ``OUTPUT_DIR/model`` (config.yaml + model.safetensors + training.yaml). A failed write
(disk full) stops every process with an :class:`OutputWriteError` naming the file.

A run refuses to start in an ``output_dir`` that already holds a checkpoint unless it resumes it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dvis.errors import ConfigError, DVISError, OutputWriteError
from dvis.fileio import atomic_write, writing
from dvis.modeling.io import CONFIG_FILE, WEIGHTS_FILE, save_pretrained
from dvis.modeling.segmenter import Mask2FormerSegmenter
from dvis.training import distributed
from dvis.training.cache import SegmenterCache, fingerprint
from dvis.training.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from dvis.training.config import SolverConfig, TrainConfig, dump_config
from dvis.training.data import (
    StepBatchSampler,
    build_clip_dataset,
    build_loader,
    build_pseudo_images,
    build_video_dataset,
    clip_order,
    uses_pseudo_videos,
)
from dvis.training.losses import DVISLoss
from dvis.training.model import build_stage_model
from dvis.training.restore import ResumeTargets, restore_training_state
from dvis.training.stage_names import STAGES
from dvis.training.stages import STAGE_CLASSES, prepare_batch
from dvis.training.validation import Validator, ValidationLog

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


class NonFiniteLossError(DVISError):
    """A loss term, or the gradient norm of a finite loss, became NaN or infinite."""


@dataclass
class RunResult:
    iteration: int
    output_dir: Path
    model_dir: Path | None
    history: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------- optimizer
def param_groups(module: nn.Module, solver: SolverConfig, backbone: nn.Module | None) -> list[dict]:
    """AdamW groups as the release (Mask2Former's build_optimizer): no weight decay on norm layers
    and embeddings, backbone learning rate x ``backbone_multiplier``."""
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    groups, seen = [], set()
    for module_name, sub in module.named_modules():
        for name, param in sub.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            decay = solver.weight_decay
            if isinstance(sub, NORM_TYPES):
                decay = solver.weight_decay_norm
            elif isinstance(sub, nn.Embedding) or "relative_position_bias_table" in name or "absolute_pos_embed" in name:
                decay = solver.weight_decay_embed
            lr = solver.base_lr * (solver.backbone_multiplier if id(param) in backbone_ids else 1.0)
            groups.append({"params": [param], "lr": lr, "weight_decay": decay, "name": f"{module_name}.{name}"})
    return groups


def lr_factor(iteration: int, solver: SolverConfig) -> float:
    """WarmupMultiStepLR: linear warm-up from ``warmup_factor``, x ``gamma`` at every step passed."""
    warmup = 1.0
    if iteration < solver.warmup_iters:
        alpha = iteration / solver.warmup_iters
        warmup = solver.warmup_factor * (1 - alpha) + alpha
    return warmup * solver.gamma ** sum(1 for s in solver.steps if s <= iteration)


# -------------------------------------------------------------------------------------- setup
def accumulation_steps(solver: SolverConfig, world_size: int) -> int:
    per_step = solver.clips_per_gpu * world_size
    if solver.batch_size % per_step:
        raise ConfigError(
            f"solver.batch_size = {solver.batch_size} is not a multiple of clips_per_gpu x world_size = "
            f"{solver.clips_per_gpu} x {world_size}; the effective batch is clips_per_gpu x world_size x accumulation")
    return solver.batch_size // per_step


def use_amp(solver: SolverConfig, device: torch.device) -> bool:
    if solver.amp == "on" and device.type != "cuda":
        raise ConfigError("solver.amp = on needs a CUDA device (AMP is float16 on GPU); use auto or off")
    return device.type == "cuda" and solver.amp != "off"


def set_segmenter_precision(model: nn.Module, precision: str) -> None:
    """solver.precision: the segmenter's forward passes (training, cache) in fp32 or the bf16 fast path."""
    if isinstance(model.segmenter, Mask2FormerSegmenter):
        model.segmenter.precision = precision
    elif precision != "fp32":
        raise ConfigError(f"solver.precision = {precision}: only the Mask2Former segmenter has a bf16 fast path")


def cache_wanted(config: TrainConfig, stage: str) -> bool:
    if stage == "segmenter" or config.cache.enabled == "off":
        return False
    if uses_pseudo_videos(config.data):
        if config.cache.enabled == "on":
            raise ConfigError("cache.enabled = on cannot be used with pseudo videos (data.pseudo_videos or "
                              "data.format = coco-pseudo-video): every clip is rotated at random, so the segmenter's "
                              "outputs differ every epoch; set cache.enabled to auto (off here) or off")
        return False
    deterministic = config.data.augmentation is None
    if config.cache.enabled == "on" and not deterministic:
        raise ConfigError("cache.enabled = on needs deterministic clips (data.augmentation: null): with random "
                          "resizing/cropping/flipping the segmenter's outputs differ every epoch")
    return deterministic


class Trainer:
    def __init__(self, config: TrainConfig, stage: str, resume: bool = False, device: str = "auto",
                 progress: bool = True) -> None:
        if stage not in STAGES:
            raise ConfigError(f"stage {stage!r}: expected one of {STAGES}")
        if config.stage is not None and config.stage != stage:
            raise ConfigError(f"this config is for the {config.stage} stage, not {stage}")
        self.config, self.stage, self.show_progress = config, stage, progress
        self.output_dir = Path(config.output_dir)
        refuse_overwrite(self.output_dir, resume)
        self.dist = distributed.setup(device)
        self.accumulation = accumulation_steps(config.solver, self.dist.world_size)
        self.amp = use_amp(config.solver, self.dist.device)
        self._seed(config.seed)
        self.videos = build_video_dataset(config.data)
        self.pseudo = build_pseudo_images(config.data, self.videos)
        self.model = build_stage_model(config, stage).to(self.dist.device)
        set_segmenter_precision(self.model, config.solver.precision)
        num_classes = self.model.config.segmenter.num_classes
        self.criterion = DVISLoss(num_classes, config.loss).to(self.dist.device)
        self.cache = self._build_cache() if cache_wanted(config, stage) else None
        if stage != "segmenter" and config.cache.enabled == "auto" and uses_pseudo_videos(config.data):
            self._note("cache.enabled = auto: the segmenter cache is off (pseudo videos are rotated per clip)")
        self.stage_module = self._stage_module()
        self.trained: nn.Module = getattr(self.model, stage)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.trained, config.solver, self._backbone()), lr=config.solver.base_lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(it, config.solver))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.validator = Validator(config.validation, stage) if config.validation.annotations else None
        self.iteration = 0
        if not (resume and self._resume()):
            # model initialisation above was identical everywhere; each process draws its own points
            torch.manual_seed(config.seed * 1000 + 1 + self.dist.rank)
        self.network = self._wrap()

    # ------------------------------------------------------------------------------- helpers
    def _seed(self, seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    def _backbone(self) -> nn.Module | None:
        return self.model.segmenter.backbone if self.stage == "segmenter" else None

    def _stage_module(self) -> nn.Module:
        cls = STAGE_CLASSES[self.stage]
        if self.stage == "segmenter":
            return cls(self.model, self.criterion)
        return cls(self.model, self.criterion, self.cache)

    def _wrap(self) -> nn.Module:
        if not distributed.is_distributed():
            return self.stage_module
        find_unused = self.config.solver.find_unused_parameters
        refiner = self.model.config.refiner
        ablated = refiner is not None and not (refiner.use_long_term_attention and refiner.use_short_term_conv
                                               and refiner.use_cross_attention)
        unused = find_unused == "on" or (find_unused == "auto" and (ablated or not self.config.loss.deep_supervision))
        device_ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
        # buffers (frozen BatchNorm statistics, the loss's class weights) are equal on every rank
        return DistributedDataParallel(self.stage_module, device_ids=device_ids, find_unused_parameters=unused)

    def _build_cache(self) -> SegmenterCache:
        cache_cfg = self.config.cache
        directory = Path(cache_cfg.dir) if cache_cfg.dir else self.output_dir / "segmenter_cache"
        files = [Path(getattr(self.videos, "ann_json", None) or getattr(self.videos, "panoptic_json"))]
        roots = [Path(root) for root in (getattr(self.videos, "image_root", None),) if root is not None]
        key = fingerprint(self.model.segmenter, files, cache_cfg.dtype, roots)
        cache = SegmenterCache(directory, key, cache_cfg.dtype)
        if self.dist.is_main:
            cache.prepare()
        distributed.barrier()
        bar = self._bar(len(self.videos), "caching segmenter outputs", 0)
        self.model.segmenter.eval()
        cache.build(self.model.segmenter, self.videos, self.dist.rank, self.dist.world_size, progress=bar)
        if bar is not None:
            bar.close()
        distributed.barrier()
        return cache

    def _note(self, message: str) -> None:
        if self.dist.is_main and self.show_progress:
            print(message)

    def _bar(self, total: int, desc: str, initial: int):
        if not (self.show_progress and self.dist.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    # -------------------------------------------------------------------------------- resume
    def _resume(self) -> bool:
        """Restore the last checkpoint if there is one; returns whether one was restored."""
        path = checkpoint_path(self.output_dir)
        if not path.is_file():
            if self.dist.is_main and self.show_progress:
                print(f"no checkpoint at {path}; starting from iteration 0")
            return False
        targets = ResumeTargets(self.trained, self.optimizer, self.scheduler, self.scaler,
                                self.dist.world_size, self.dist.rank)
        self.iteration = restore_training_state(path, load_checkpoint(path, self.stage), targets)
        return True

    def _checkpoint(self) -> None:
        rngs = distributed.gather_objects(rng_state())
        self._on_main(lambda: save_checkpoint(checkpoint_path(self.output_dir), {
            "stage": self.stage,
            "iteration": self.iteration,
            "model": {k: v.detach().cpu() for k, v in self.trained.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "world_size": self.dist.world_size,
        }))

    def _on_main(self, write) -> None:
        """Run ``write()`` on rank 0 only (the other processes wait); a failed write (OutputWriteError)
        stops every process with the same error."""
        message = None
        if self.dist.is_main:
            try:
                write()
            except OutputWriteError as err:
                if not distributed.is_distributed():
                    raise
                message = str(err)
        message = distributed.broadcast_object(message)
        # end on a barrier: a gloo broadcast's work object, still being freed by gloo's thread, can
        # deadlock a process group destroyed right after it (the thread needs the GIL)
        distributed.barrier()
        if message is not None:
            raise OutputWriteError(message)

    # ---------------------------------------------------------------------------------- loop
    def _loader(self):
        solver = self.config.solver
        data, seed = self.config.data, self.config.seed
        clips = build_clip_dataset(data, self.videos, seed, with_frames=self.stage_module.needs_pixels,
                                   pseudo=self.pseudo)
        sampler = StepBatchSampler(clip_order(data, self.videos, self.pseudo, seed), self.iteration, solver.max_iter,
                                   self.accumulation, self.dist.world_size, self.dist.rank, solver.clips_per_gpu)
        return build_loader(clips, sampler, self.config.data.num_workers)

    def _guided(self) -> bool:
        return self.iteration < self.config.loss.guided_fraction * self.config.solver.max_iter

    def _micro_step(self, samples: list[dict], last: bool) -> dict[str, torch.Tensor]:
        batch = prepare_batch(samples, self.model.segmenter, self.dist.device, self.stage_module.needs_pixels)
        sync = self.network.no_sync() if (not last and isinstance(self.network, DistributedDataParallel)) else _null()
        with sync:
            with torch.autocast(self.dist.device.type, dtype=torch.float16, enabled=self.amp):
                terms = self.network(batch, self._guided())
            names = sorted(terms)
            values = distributed.all_reduce_mean(torch.stack([terms[n].detach().float() for n in names]))
            self._check_finite(dict(zip(names, values.tolist())))
            total = self.criterion.weighted_total(terms) / self.accumulation
            self.scaler.scale(total).backward()
        return {n: v / self.accumulation for n, v in zip(names, values.tolist())}

    def _check_finite(self, values: dict[str, float]) -> None:
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            raise NonFiniteLossError(
                f"iteration {self.iteration}: loss term {bad[0]} is {values[bad[0]]}"
                + (f" (also non-finite: {', '.join(bad[1:])})" if len(bad) > 1 else "")
                + "; lower solver.base_lr, check the data, or turn solver.amp off")

    def _optimizer_step(self) -> float:
        params = [p for p in self.trained.parameters() if p.requires_grad]
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.solver.clip_grad_norm or float("inf"))
        if not self.scaler.is_enabled():  # with AMP, GradScaler skips steps with inf/NaN gradients
            self._check_grad_norm(float(norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(norm)

    def _check_grad_norm(self, norm: float) -> None:
        if not math.isfinite(norm):
            raise NonFiniteLossError(
                f"iteration {self.iteration}: the gradient norm is {norm} (non-finite) although every loss term "
                "is finite; the weights were not updated (the last checkpoint is intact). A backward pass made "
                "NaN/Inf gradients: lower solver.base_lr, check custom layers for 0/0 or overflow")

    def train(self, stop_at: int | None = None) -> RunResult:
        """Run to ``solver.max_iter`` (or stop after iteration ``stop_at``, leaving a checkpoint)."""
        solver = self.config.solver
        self.stage_module.train()
        self.trained.train()
        logger = self._metrics_log()
        validation_log = ValidationLog(self.output_dir / "validation.csv", self.iteration)
        bar = self._bar(solver.max_iter, f"train {self.stage}", self.iteration)
        history: list[dict[str, float]] = []
        micro, step_terms, started = 0, {}, time.perf_counter()
        end = solver.max_iter if stop_at is None else min(stop_at, solver.max_iter)
        for samples in self._loader() if self.iteration < end else []:
            terms = self._micro_step(samples, last=micro == self.accumulation - 1)
            step_terms = {k: step_terms.get(k, 0.0) + v for k, v in terms.items()}
            micro += 1
            if micro < self.accumulation:
                continue
            lr = max(group["lr"] for group in self.optimizer.param_groups)  # the non-backbone rate
            grad_norm = self._optimizer_step()
            self.iteration += 1
            total = float(self.criterion.weighted_total({k: torch.tensor(v) for k, v in step_terms.items()}))
            row = {"iteration": self.iteration, "lr": lr, "loss": total, "grad_norm": grad_norm,
                   "time": time.perf_counter() - started, **step_terms}
            history.append(row)
            if bar is not None:
                bar.set_postfix(loss=f"{total:.3f}", lr=f"{lr:.2e}")
                bar.update(1)
            if self.iteration % solver.log_period == 0 or self.iteration == end:
                self._on_main(lambda row=row: logger.write(row))
            if self.validator is not None and (self.iteration % self.config.validation.period == 0
                                               or self.iteration == solver.max_iter):
                self._validate(validation_log)
            if self.iteration % solver.checkpoint_period == 0 or self.iteration == end:
                self._checkpoint()
            micro, step_terms, started = 0, {}, time.perf_counter()
            if self.iteration >= end:
                break
        if bar is not None:
            bar.close()
        model_dir = self._export() if self.iteration >= solver.max_iter else None
        return RunResult(self.iteration, self.output_dir, model_dir, history)

    def _metrics_log(self) -> MetricsLog | None:
        made: list[MetricsLog] = []
        self._on_main(lambda: made.append(MetricsLog(self.output_dir / "metrics.csv", self.iteration)))
        return made[0] if made else None

    def _validate(self, log: ValidationLog) -> None:
        """Score the model on the validation split (rank 0); keep its weights in ``best/`` when
        they beat every earlier score (``best/validation.json`` holds that score)."""
        def run() -> None:
            metrics = self.validator(self.model)
            row = {"iteration": self.iteration, **metrics}
            with writing(self.output_dir / "validation.csv", "validation log"):
                log.append(row, lambda path, text: atomic_write(path, lambda p: p.write_text(text)))
            metric = self.config.validation.metric
            best = best_validation(self.output_dir)
            if not math.isnan(metrics[metric]) and (best is None or metrics[metric] > best[metric]):
                directory = self.output_dir / "best"
                with writing(directory, "best model folder"):
                    save_pretrained(self.model, directory, {"validation.json": json.dumps(row) + "\n"})

        self._on_main(run)
        self.stage_module.train()
        self.trained.train()

    def _export(self) -> Path | None:
        """``model/``: the final weights, or with validation the best-scoring ones (the final
        weights then also go to ``model_last/``)."""
        directory = self.output_dir / "model"
        card = dump_config(self.config) + f"trained_stage: {self.stage}\niterations: {self.iteration}\n"
        best = best_validation(self.output_dir) if self.validator is not None else None

        def write() -> None:
            if best is None:
                with writing(directory, "model folder"):
                    save_pretrained(self.model, directory, {"training.yaml": card})
                return
            with writing(self.output_dir / "model_last", "model folder"):
                save_pretrained(self.model, self.output_dir / "model_last", {"training.yaml": card})
            selected = card + (f"selected_iteration: {int(best['iteration'])}  # best validation "
                               f"{self.config.validation.metric} = {best[self.config.validation.metric]:.4f}\n")
            with writing(directory, "model folder"):
                for name in (CONFIG_FILE, WEIGHTS_FILE, "validation.json"):
                    source = self.output_dir / "best" / name
                    atomic_write(directory / name, lambda p, source=source: shutil.copyfile(source, p))
                atomic_write(directory / "training.yaml", lambda p: p.write_text(selected))

        self._on_main(write)
        return directory


def best_validation(output_dir: Path) -> dict[str, float] | None:
    """The score stored with ``OUTPUT_DIR/best`` (None when there is no best model yet)."""
    path = Path(output_dir) / "best" / "validation.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class MetricsLog:
    """``metrics.csv``: one row per logged step. On resume, rows after the resumed iteration
    (written after the checkpoint, before the interruption) are dropped."""

    def __init__(self, path: Path, start_iteration: int) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.is_file():
            rows = list(csv.DictReader(path.open(newline="")))
            kept = [r for r in rows if int(r["iteration"]) <= start_iteration]
            self.fields = list(rows[0].keys()) if rows else None
            if len(kept) != len(rows):
                self._rewrite(kept)

    def _rewrite(self, rows: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, lambda p: p.write_text(buffer.getvalue()), "metrics file")

    def write(self, row: dict) -> None:
        fields = self.fields or list(row.keys())
        with writing(self.path, "metrics file"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
                if self.fields is None:
                    writer.writeheader()
                writer.writerow(row)
        self.fields = fields


def refuse_overwrite(output_dir: Path, resume: bool) -> None:
    """A new run must not destroy a previous one (its checkpoint, metrics and model)."""
    path = checkpoint_path(output_dir)
    if not resume and path.is_file():
        raise ConfigError(
            f"output_dir {output_dir} already holds a training run ({path}); pass --resume (resume=True) to "
            "continue it, or set another output_dir (output_dir=DIR) to start a new run; nothing was changed")


def train(config: TrainConfig, stage: str, resume: bool = False, device: str = "auto", progress: bool = True,
          stop_at: int | None = None) -> RunResult:
    trainer = Trainer(config, stage, resume=resume, device=device, progress=progress)
    return trainer.train(stop_at=stop_at)
