"""The training loop shared by the three stages.

One optimizer step = ``accumulation`` micro-steps of ``clips_per_gpu`` clips on each of the
``world_size`` processes, so the effective batch is ``clips_per_gpu x world_size x accumulation``
clips (``solver.batch_size``; ``accumulation`` is derived from it and must be a whole number).

Per step: loss terms -> all-reduced for logging and the finiteness check (a NaN/Inf stops every
process with :class:`NonFiniteLossError` naming the iteration and the term) -> backward (DDP
averages gradients; no sync on the first micro-steps) -> AMP unscale -> clip the L2 norm of all
trained gradients together to ``clip_grad_norm`` -> AdamW -> step-decay schedule. Rank 0 shows a
tqdm bar with the loss and ETA, appends to ``metrics.csv`` every ``log_period`` steps, writes
``checkpoints/last.pt`` every ``checkpoint_period`` steps and at the end, and exports the stage
model to ``OUTPUT_DIR/model`` (config.yaml + model.safetensors + training.yaml).
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dvis.errors import ConfigError, DVISError
from dvis.modeling.io import atomic_write, save_pretrained
from dvis.training import distributed
from dvis.training.cache import SegmenterCache, fingerprint
from dvis.training.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from dvis.training.config import STAGES, SolverConfig, TrainConfig, dump_config
from dvis.training.data import ClipOrder, StepBatchSampler, build_clip_dataset, build_loader, build_video_dataset
from dvis.training.losses import DVISLoss
from dvis.training.model import build_stage_model
from dvis.training.stages import STAGE_CLASSES, prepare_batch

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


class NonFiniteLossError(DVISError):
    """A loss term became NaN or infinite."""


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


def cache_wanted(config: TrainConfig, stage: str) -> bool:
    if stage == "segmenter" or config.cache.enabled == "off":
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
        self.dist = distributed.setup(device)
        self.output_dir = Path(config.output_dir)
        self.accumulation = accumulation_steps(config.solver, self.dist.world_size)
        self.amp = use_amp(config.solver, self.dist.device)
        self._seed(config.seed)
        self.videos = build_video_dataset(config.data)
        self.model = build_stage_model(config, stage).to(self.dist.device)
        num_classes = self.model.config.segmenter.num_classes
        self.criterion = DVISLoss(num_classes, config.loss).to(self.dist.device)
        self.cache = self._build_cache() if cache_wanted(config, stage) else None
        self.stage_module = self._stage_module()
        self.trained: nn.Module = getattr(self.model, stage)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.trained, config.solver, self._backbone()), lr=config.solver.base_lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(it, config.solver))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
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
        key = fingerprint(self.model.segmenter, files, cache_cfg.dtype)
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
        state = load_checkpoint(path, self.stage)
        self.trained.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            raise DVISError(f"{path}: saved by {len(rngs)} processes, resumed with {self.dist.world_size}; "
                            "resume with the same number of processes")
        set_rng_state(rngs[self.dist.rank])
        return True

    def _checkpoint(self) -> None:
        rngs = distributed.gather_objects(rng_state())
        if self.dist.is_main:
            save_checkpoint(checkpoint_path(self.output_dir), {
                "stage": self.stage,
                "iteration": self.iteration,
                "model": {k: v.detach().cpu() for k, v in self.trained.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rngs,
                "world_size": self.dist.world_size,
            })
        distributed.barrier()

    # ---------------------------------------------------------------------------------- loop
    def _loader(self):
        solver = self.config.solver
        clips = build_clip_dataset(self.config.data, self.videos, self.config.seed)
        sampler = StepBatchSampler(ClipOrder(len(self.videos), self.config.seed), self.iteration, solver.max_iter,
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
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(norm)

    def train(self, stop_at: int | None = None) -> RunResult:
        """Run to ``solver.max_iter`` (or stop after iteration ``stop_at``, leaving a checkpoint)."""
        solver = self.config.solver
        self.stage_module.train()
        self.trained.train()
        logger = MetricsLog(self.output_dir / "metrics.csv", self.iteration) if self.dist.is_main else None
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
            if logger is not None and (self.iteration % solver.log_period == 0 or self.iteration == end):
                logger.write(row)
            if self.iteration % solver.checkpoint_period == 0 or self.iteration == end:
                self._checkpoint()
            micro, step_terms, started = 0, {}, time.perf_counter()
            if self.iteration >= end:
                break
        if bar is not None:
            bar.close()
        model_dir = self._export() if self.iteration >= solver.max_iter else None
        return RunResult(self.iteration, self.output_dir, model_dir, history)

    def _export(self) -> Path | None:
        directory = self.output_dir / "model"
        if self.dist.is_main:
            card = dump_config(self.config) + f"trained_stage: {self.stage}\niterations: {self.iteration}\n"
            save_pretrained(self.model, directory, {"training.yaml": card})
        distributed.barrier()
        return directory


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
        atomic_write(self.path, lambda p: p.write_text(buffer.getvalue()))

    def write(self, row: dict) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


def train(config: TrainConfig, stage: str, resume: bool = False, device: str = "auto", progress: bool = True,
          stop_at: int | None = None) -> RunResult:
    trainer = Trainer(config, stage, resume=resume, device=device, progress=progress)
    return trainer.train(stop_at=stop_at)
