"""Overlap I/O with the model: iterate a source in a background thread, or consume in one.

Video decoding (PyAV), PNG/JPEG decoding, drawing and mp4 encoding spend most of their time in C
code that releases the GIL, as do PyTorch's kernels, so one helper thread lets the next frames be
decoded (or the last ones encoded) while the model runs on the current ones.

* :class:`Prefetcher` reads up to ``depth`` items of an iterable ahead, in a thread;
* :class:`BackgroundWorker` runs a function on queued items in a thread, in order.

Both re-raise the thread's exception (with its traceback) in the caller at the next call, and
stop their thread when closed or left early; ``depth=0`` runs everything in the caller's thread
(no overlap), which the benchmarks use for side-by-side ratios.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator

_DONE = object()
_POLL_S = 0.1  # how often a blocked thread checks whether it was told to stop


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Iterator):
    """``iter(iterable)`` read ahead by up to ``depth`` items in a daemon thread.

    Use as an iterator (and preferably as a context manager, or call :meth:`close`, so that a
    consumer leaving early stops the thread). ``depth=0``: a plain iterator, no thread.
    """

    def __init__(self, iterable: Iterable, depth: int = 8, name: str = "dvis-prefetch") -> None:
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self._source = iter(iterable)
        self._depth = depth
        self._finished = False
        if depth == 0:
            return
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put(_Failure(error))
            return
        self._put(_DONE)

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        if self._depth == 0:
            return next(self._source)
        item = self._queue.get()
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        return item

    def close(self) -> None:
        """Stop the thread (items not yet consumed are dropped) and wait for it."""
        self._finished = True
        if self._depth == 0:
            return
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BackgroundWorker:
    """``function(*args)`` for each :meth:`submit`, in submission order, in one daemon thread.

    At most ``depth`` calls wait in the queue (``submit`` blocks beyond that, so a slow consumer
    bounds the memory). :meth:`close` waits for the queued calls; an exception of a call is raised
    by the next :meth:`submit` or by :meth:`close`. ``depth=0``: each call runs in ``submit``.
    """

    def __init__(self, function: Callable[..., Any], depth: int = 8, name: str = "dvis-worker") -> None:
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self._function, self._depth = function, depth
        self._error: BaseException | None = None
        self._cancelled = False
        if depth == 0:
            return
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            args = self._queue.get()
            if args is _DONE:
                return
            if self._error is None and not self._cancelled:  # after a failure the rest is skipped
                try:
                    self._function(*args)
                except BaseException as error:
                    self._error = error

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, *args: Any) -> None:
        if self._depth == 0:
            self._function(*args)
            return
        self._raise()
        self._queue.put(args)

    def close(self, cancel: bool = False) -> None:
        """Wait for every queued call (``cancel``: skip the calls not yet started); raise the
        first failure among them."""
        if self._depth == 0:
            return
        self._cancelled = self._cancelled or cancel
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
        self._raise()
