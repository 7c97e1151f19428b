"""One bounded background reader: a thread fills a queue from an iterator.

Both the streaming source's chunk reader and ``dfn.prefetch_to_device`` use it. The
thread holds only the iterator, the queue and a stop event, never its owner, so the
owner can be garbage collected while it runs; collecting or closing the owner stops
the thread.

Exit is safe by construction. The threads are not daemons: the interpreter joins them
before it runs any ``atexit`` handler, so no thread can still be inside pyarrow or
TensorFlow when those libraries tear down their native thread pools (a daemon thread
abandoned there aborts the process with "terminate called without an active exception").
They stop on their own once the main thread has finished (``threading.main_thread()``
is no longer alive when the interpreter starts joining threads), finishing at most the
item they are reading; no private interpreter hook and no timeout is involved. A read
that never returns (a stalled network filesystem) therefore keeps the process from
exiting, as any unfinished read would; ``close()`` still returns at once. A thread that
ends collects garbage, so a backend reader it abandoned mid-stream (pyarrow's dataset
scanners sit in reference cycles) is destroyed while pyarrow is alive, not in the
interpreter's last collection, where destroying one aborts the process too.
"""

from __future__ import annotations

import atexit
import gc
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

_ITEM, _END, _ERROR = 0, 1, 2
_POLL = 0.05  # seconds between checks of the stop conditions while waiting on the queue


class StreamClosed(RuntimeError):
    """Raised by a read that was waiting on a background reader when the reader was closed."""


def running(stop: threading.Event) -> bool:
    """Returns whether a background thread should go on: not stopped, and the program not exiting."""
    return not stop.is_set() and threading.main_thread().is_alive()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while running(stop):
        try:
            q.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def _produce(box: list, q: queue.Queue, stop: threading.Event, transform: Callable | None) -> None:
    it = box.pop()  # the thread's arguments keep no reference: the iterator dies with this frame
    try:
        for item in it:
            # An item read after close() is discarded: nobody takes it.
            if not running(stop) or not _put(q, (_ITEM, item if transform is None else transform(item)), stop):
                return
        _put(q, (_END, None), stop)
    except BaseException as err:  # handed to the consumer, re-raised there
        _put(q, (_ERROR, err), stop)
    finally:
        stop.set()  # a consumer waiting on an empty queue learns that nothing more comes
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # a backend's cleanup error must not mask the stream's outcome
                pass
        del it, close
        # A backend reader abandoned mid-stream can sit in a reference cycle (a pyarrow dataset
        # scanner inside HF's generators): left to the interpreter's last collection, it is
        # destroyed after pyarrow's runtime and aborts the process. Collect it now, while
        # everything is alive; this runs once per reader, when it closes or ends.
        gc.collect()


def _drain(q: queue.Queue) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def _shutdown(stop: threading.Event, q: queue.Queue, thread: threading.Thread, timeout: float) -> None:
    stop.set()
    _drain(q)  # a producer blocked on a full queue notices `stop` within _POLL
    if thread is not threading.current_thread() and thread.is_alive():
        # A producer inside a backend read is not waited for beyond `timeout`: it discards
        # what it reads and ends when the read returns (and the interpreter joins it at exit).
        thread.join(timeout=timeout)


# The same holds for a reader abandoned on the caller's thread (a backend's probe of its
# first rows): collect before the interpreter's teardown, while pyarrow and TensorFlow live.
atexit.register(gc.collect)


class Prefetcher:
    """Reads ``iterator`` on a background thread into a queue of at most ``size`` items.

    ``get()`` returns ``(item, False)``, or ``(None, True)`` once the iterator is
    exhausted, re-raises an error the iterator raised, and raises :class:`StreamClosed`
    once the reader is closed (also from another thread while ``get()`` waits).
    ``transform`` runs on the thread for each item (e.g. ``jax.device_put``).
    """

    def __init__(self, iterator: Iterator, size: int, name: str, transform: Callable | None = None,
                 join_timeout: float = 10.0):
        self.name = name
        self._q: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_produce, args=([iterator], self._q, self._stop, transform), name=name, daemon=False
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._q, self._thread, join_timeout)

    def get(self) -> tuple[Any, bool]:
        """Returns the next ``(item, ended)``; blocks until the thread has produced it."""
        while True:
            try:
                kind, item = self._q.get(timeout=_POLL)
                break
            except queue.Empty:
                if self._stop.is_set() and self._q.empty():
                    raise StreamClosed(f"{self.name}: the reader was closed while a read waited on it") from None
        if kind == _ERROR:
            raise item
        return (None, True) if kind == _END else (item, False)

    @property
    def closed(self) -> bool:
        """Returns whether ``close()`` has run (or the owner was collected)."""
        return not self._finalizer.alive

    def close(self) -> None:
        """Stops the thread (idempotent); returns within the join timeout even if a read blocks."""
        self._finalizer()


__all__ = ["Prefetcher", "StreamClosed", "running"]
