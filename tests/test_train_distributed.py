"""Two CPU processes (gloo, DDP) train a few steps: the replicas stay identical and trained, each
process draws its own clips, the segmenter cache is built once, split between the processes, and a
failed write on rank 0 stops every process with the same error (no hang)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from test_train_common import make_config, one_thread, saved_model, synthetic_root  # noqa: F401 (fixtures)

from dvis.training.data import ClipOrder, StepBatchSampler

WORLD = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker(rank: int, port: int, root: str, out: str, init: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from dvis.training import distributed
    from dvis.training.loop import Trainer

    config = make_config("tracker", Path(root), Path(out), Path(init),
                         solver={"max_iter": 3, "batch_size": 4, "clips_per_gpu": 1},
                         cache={"enabled": "on", "dtype": "float32"})
    trainer = Trainer(config, "tracker", device="cpu", progress=False)
    assert trainer.accumulation == 2 and trainer.dist.world_size == WORLD
    seen = []
    trainer.stage_module.register_forward_pre_hook(lambda m, args: seen.append(args[0].video_index[:]))
    initial = {k: v.detach().clone() for k, v in trainer.trained.state_dict().items()}
    trainer.train()
    torch.save({"params": {k: v.detach().clone() for k, v in trainer.trained.state_dict().items()},
                "initial": initial, "videos": seen}, Path(out) / f"rank{rank}.pt")
    distributed.teardown()


def test_two_gloo_processes_keep_identical_replicas(tmp_path, synthetic_root):
    init = saved_model(tmp_path / "init", ("segmenter",))
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(worker, args=(free_port(), str(synthetic_root), str(out), str(init)), nprocs=WORLD, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name
        assert torch.equal(ranks[0]["initial"][name], ranks[1]["initial"][name]), name
    # and they trained: identical replicas that never moved would pass the check above
    unmoved = [name for name, value in ranks[0]["params"].items() if value.is_floating_point()
               and torch.equal(value, ranks[0]["initial"][name])]
    assert not unmoved, f"weights unchanged by 3 steps: {unmoved}"
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "model" / "model.safetensors").is_file()
    # 3 steps x 2 micro-steps x 1 clip per process
    assert len(ranks[0]["videos"]) == len(ranks[1]["videos"]) == 6
    cached = sorted(p.name for p in (out / "segmenter_cache").glob("video_*.safetensors"))
    assert cached == ["video_000000.safetensors", "video_000001.safetensors", "video_000002.safetensors"]
    assert ranks[0]["videos"] != ranks[1]["videos"]  # different clips, yet identical weights: synced gradients
    exported = load_file(str(out / "model" / "model.safetensors"))
    for name, value in ranks[0]["params"].items():
        assert torch.equal(exported[f"tracker.{name}"], value), name


def failing_writer(rank: int, port: int, root: str, out: str, init: str) -> None:
    """Rank 0's checkpoint write fails (disk full): every process must stop with the same error."""
    import errno

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from dvis.training import checkpoint, distributed
    from dvis.training.loop import Trainer

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    checkpoint.atomic_write = disk_full  # the checkpoint write only (torch.save also pickles for all_gather_object)
    solver = {"max_iter": 2, "checkpoint_period": 1, "batch_size": 2, "clips_per_gpu": 1}
    config = make_config("tracker", Path(root), Path(out), Path(init), solver=solver)
    try:
        Trainer(config, "tracker", device="cpu", progress=False).train()
    except Exception as err:  # noqa: BLE001 - recorded for the test to check
        (Path(out) / f"rank{rank}.err").write_text(f"{type(err).__name__}: {err}")
    finally:
        distributed.teardown()


def test_a_failed_write_on_rank_0_stops_every_process(tmp_path, synthetic_root):
    init = saved_model(tmp_path / "init", ("segmenter",))
    out = tmp_path / "ddp"
    out.mkdir()
    context = mp.spawn(failing_writer, args=(free_port(), str(synthetic_root), str(out), str(init)), nprocs=WORLD,
                       join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:  # a hang: rank 1 waiting for a rank 0 that gave up
            for process in context.processes:
                process.kill()
            pytest.fail("a process was still running 120 s after rank 0's write failed")
    last = out / "checkpoints" / "last.pt"
    for rank in range(WORLD):
        assert (out / f"rank{rank}.err").read_text() == (
            f"OutputWriteError: cannot write the training checkpoint {last}: No space left on device; the previous "
            "version (if any) is unchanged")


def test_processes_draw_disjoint_clip_positions():
    order = ClipOrder(num_videos=5, seed=0)
    draws = []
    for rank in range(WORLD):
        sampler = StepBatchSampler(order, start_iter=0, max_iter=3, accumulation=2, world_size=WORLD, rank=rank,
                                   clips_per_gpu=2)
        draws.append([p for step in range(3) for micro in range(2) for p in sampler.positions(step, micro)])
    assert not set(draws[0]) & set(draws[1])
    assert sorted(draws[0] + draws[1]) == list(range(24))  # every position once: 3 steps x batch 8
    # an epoch visits every video once, in a seeded order; the next epoch reshuffles
    epoch0 = [order.index(p) % 5 for p in range(5)]
    epoch1 = [order.index(p) % 5 for p in range(5, 10)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(5)) and epoch0 != epoch1
    resumed = StepBatchSampler(order, start_iter=2, max_iter=3, accumulation=2, world_size=WORLD, rank=1,
                               clips_per_gpu=2)
    full = StepBatchSampler(order, start_iter=0, max_iter=3, accumulation=2, world_size=WORLD, rank=1,
                            clips_per_gpu=2)
    assert list(resumed) == list(full)[4:]


@pytest.mark.parametrize("clips_per_gpu", [1, 2])
def test_effective_batch_is_clips_x_world_x_accumulation(clips_per_gpu):
    from dvis.training.config import SolverConfig
    from dvis.training.loop import accumulation_steps

    solver = SolverConfig(batch_size=8, clips_per_gpu=clips_per_gpu)
    assert clips_per_gpu * WORLD * accumulation_steps(solver, WORLD) == 8
