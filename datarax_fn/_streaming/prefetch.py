"""One bounded background reader: a daemon thread fills a queue from an iterator.

Both the streaming source's chunk reader and ``dfn.prefetch_to_device`` use it. The
thread holds only the iterator, the queue and a stop event, never its owner, so the
owner can be garbage collected while it runs; collecting or closing the owner stops
the thread. Every live reader is stopped and joined when the interpreter shuts down,
before any ``atexit`` handler of a backend library (pyarrow, TensorFlow) tears down the
native thread pools the iterator may still be running in.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

_ITEM, _END, _ERROR = 0, 1, 2
_LIVE: weakref.WeakSet = weakref.WeakSet()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _produce(it: Iterator, q: queue.Queue, stop: threading.Event, transform: Callable | None) -> None:
    try:
        for item in it:
            if stop.is_set() or not _put(q, (_ITEM, item if transform is None else transform(item)), stop):
                return
        _put(q, (_END, None), stop)
    except BaseException as err:  # handed to the consumer, re-raised there
        _put(q, (_ERROR, err), stop)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # a backend's cleanup error must not mask the stream's outcome
                pass


def _shutdown(stop: threading.Event, q: queue.Queue, thread: threading.Thread, timeout: float) -> None:
    stop.set()
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
    if thread is not threading.current_thread() and thread.is_alive():
        # The producer notices `stop` within 50 ms of its next item; a backend stuck in its
        # own code cannot hang the caller for longer than `timeout`.
        thread.join(timeout=timeout)


class Prefetcher:
    """Reads ``iterator`` on a daemon thread into a queue of at most ``size`` items.

    ``get()`` returns ``(item, False)``, or ``(None, True)`` once the iterator is
    exhausted, and re-raises an error the iterator raised. ``transform`` runs on the
    thread for each item (e.g. ``jax.device_put``).
    """

    def __init__(self, iterator: Iterator, size: int, name: str, transform: Callable | None = None,
                 join_timeout: float = 10.0):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_produce, args=(iterator, self._q, self._stop, transform), name=name, daemon=True
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._q, self._thread, join_timeout)
        _LIVE.add(self)

    def get(self) -> tuple[Any, bool]:
        """Returns the next ``(item, ended)``; blocks until the thread has produced it."""
        kind, item = self._q.get()
        if kind == _ERROR:
            raise item
        return (None, True) if kind == _END else (item, False)

    def close(self) -> None:
        """Stops the thread (idempotent)."""
        self._finalizer()


# At exit the wait is as long as one item can take: a thread abandoned inside pyarrow aborts
# the process, and on a loaded machine one read (a row group, a shuffle window) can take
# seconds. All threads are told to stop first, so they finish their items together.
_EXIT_TIMEOUT = 60.0


def _close_all() -> None:
    readers = list(_LIVE)
    for reader in readers:
        reader._stop.set()
    deadline = time.monotonic() + _EXIT_TIMEOUT
    for reader in readers:
        if reader._thread is not threading.current_thread():
            while reader._thread.is_alive() and time.monotonic() < deadline:
                try:  # a producer blocked on a full queue needs room to notice the stop
                    reader._q.get_nowait()
                except queue.Empty:
                    pass
                reader._thread.join(timeout=0.05)
        reader.close()


# threading's exit hooks run before the interpreter's atexit handlers (concurrent.futures
# stops its workers the same way); a thread still inside pyarrow when pyarrow's own exit
# handlers destroy its thread pool aborts the process ("terminate called without an
# active exception").
threading._register_atexit(_close_all)
