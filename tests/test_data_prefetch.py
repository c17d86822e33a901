"""dvis.data.prefetch: items in order, errors raised in the caller, threads stopped, depth 0 inline."""

from __future__ import annotations

import threading
import time

import pytest

from dvis.data.prefetch import BackgroundWorker, Prefetcher


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetcher_yields_every_item_in_order(depth):
    with Prefetcher(range(20), depth=depth) as items:
        assert list(items) == list(range(20))
        with pytest.raises(StopIteration):
            next(items)


def test_prefetcher_reads_ahead_in_another_thread():
    seen: list[str] = []

    def source():
        for i in range(3):
            seen.append(threading.current_thread().name)
            yield i

    with Prefetcher(source(), depth=4, name="dvis-test-prefetch") as items:
        deadline = time.monotonic() + 5
        while len(seen) < 3 and time.monotonic() < deadline:  # read ahead before anything is asked
            time.sleep(0.01)
        assert seen == ["dvis-test-prefetch"] * 3
        assert list(items) == [0, 1, 2]


def test_prefetcher_raises_the_sources_error_in_the_caller_after_the_items_before_it():
    def source():
        yield 1
        raise OSError("frame 1 of clip.mp4 is damaged")

    items = Prefetcher(source(), depth=2)
    assert next(items) == 1
    with pytest.raises(OSError, match="frame 1 of clip.mp4"):
        next(items)
    with pytest.raises(StopIteration):
        next(items)
    items.close()


def test_prefetcher_closed_early_stops_its_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    with Prefetcher(endless(), depth=2, name="dvis-test-endless") as items:
        assert next(items) == 0
    assert not _threads("dvis-test-endless")


def test_background_worker_runs_calls_in_order_in_its_thread():
    calls: list[tuple[int, str]] = []
    worker = BackgroundWorker(lambda i: calls.append((i, threading.current_thread().name)), depth=2,
                              name="dvis-test-worker")
    for i in range(10):
        worker.submit(i)
    worker.close()
    assert calls == [(i, "dvis-test-worker") for i in range(10)]
    assert not _threads("dvis-test-worker")


def test_background_worker_depth_zero_runs_inline():
    calls: list[str] = []
    worker = BackgroundWorker(lambda: calls.append(threading.current_thread().name), depth=0)
    worker.submit()
    assert calls == [threading.current_thread().name]
    worker.close()


def test_background_worker_failure_is_raised_and_later_calls_skipped():
    done: list[int] = []

    def write(i):
        if i == 2:
            raise OSError("No space left on device")
        done.append(i)

    worker = BackgroundWorker(write, depth=1)
    with pytest.raises(OSError, match="No space left"):
        for i in range(50):
            worker.submit(i)
        worker.close()
    assert done == [0, 1]


def test_background_worker_cancel_skips_queued_calls():
    gate, done = threading.Event(), []

    def slow(i):
        gate.wait(5)
        done.append(i)

    worker = BackgroundWorker(slow, depth=8)
    for i in range(5):
        worker.submit(i)
    threading.Timer(0.05, gate.set).start()
    worker.close(cancel=True)
    assert len(done) <= 1  # at most the call already running when cancelled


def test_negative_depth_is_refused():
    with pytest.raises(ValueError, match="depth must be >= 0"):
        Prefetcher([], depth=-1)
    with pytest.raises(ValueError, match="depth must be >= 0"):
        BackgroundWorker(print, depth=-1)
