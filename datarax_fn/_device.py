"""Device helpers: the whole dataset as device arrays, and a bounded host-to-device prefetch."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np

from . import _core
from ._streaming import _put, _shutdown

PyTree = Any
_ITEM, _END, _ERROR = 0, 1, 2


def collect_to_array(source: Any, *, chunk_size: int = 4096) -> PyTree:
    """Returns the whole dataset as a PyTree of device arrays with leading axis N.

    For an in-memory source this is its ``data`` as is: record order, no copy. A
    streaming source (or a pipeline over one, whose stages are not applied) is read for
    one epoch from its current position in chunks of ``chunk_size`` records, in stream
    order, and the result is moved to the device once. Use it for staged training: put
    the arrays into ``dfn.from_arrays`` or index them yourself.

    ```python
    import numpy as np, datarax_fn as dfn
    arrays = dfn.collect_to_array(dfn.from_arrays({"x": np.arange(5)}))
    assert arrays["x"].tolist() == [0, 1, 2, 3, 4]
    ```
    """
    from ._pipeline import Pipeline
    from ._eager import EagerSource

    if isinstance(source, Pipeline):
        source = source.source
    if isinstance(source, EagerSource):
        return source.data
    n = _core.num_records(source)
    if n is None:
        raise ValueError(
            "collect_to_array: the source has unknown length (an endless stream), so it cannot be "
            "collected; iterate it with dfn.iterate(source, size) instead."
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"collect_to_array: chunk_size must be an int >= 1; got {chunk_size!r}.")
    parts, seen, state = [], 0, source
    while seen < n:
        size = min(chunk_size, n - seen)
        state, batch = _core.get_batch(state, size)
        parts.append(jax.tree.map(np.asarray, batch))
        seen += size
    return jax.device_put(jax.tree.map(lambda *xs: np.concatenate(xs), *parts))


def _producer(it: Iterator, q: queue.Queue, stop: threading.Event, device: Any) -> None:
    try:
        for item in it:
            if not _put(q, (_ITEM, jax.device_put(item, device)), stop):
                return
        _put(q, (_END, None), stop)
    except BaseException as err:  # re-raised in the consumer
        _put(q, (_ERROR, err), stop)


def prefetch_to_device(iterator: Iterable, size: int = 2, *, device: Any = None) -> Iterator:
    """Yields the items of ``iterator``, moved to ``device``, up to ``size`` items ahead.

    A background thread pulls items (any PyTree: batches, ``(state, batch)`` pairs) and
    ``jax.device_put``s them into a queue holding at most ``size``, so host reading and
    the transfer overlap with the device's work. The thread ends when the iterator is
    exhausted, when it raises (the error is re-raised here), or when this generator is
    closed or garbage collected (``break`` out of a ``for`` loop closes it).

    ```python
    import numpy as np, datarax_fn as dfn
    batches = ({"x": np.full(2, i)} for i in range(3))
    assert [int(b["x"][0]) for b in dfn.prefetch_to_device(batches)] == [0, 1, 2]
    ```
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"prefetch_to_device: size must be an int >= 1; got size={size!r}.")
    return _prefetch(iter(iterator), size, device)


def _prefetch(it: Iterator, size: int, device: Any) -> Iterator:
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    thread = threading.Thread(target=_producer, args=(it, q, stop, device), name="datarax_fn-prefetch_to_device", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise item
            yield item
    finally:
        _shutdown(stop, q, thread, timeout=10)
