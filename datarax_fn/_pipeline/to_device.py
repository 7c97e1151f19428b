"""Moving data to devices: the whole dataset as device arrays, and a bounded host-to-device prefetch."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np

from .._state import contract
from .._eager.source import EagerSource
from .pipeline import Pipeline
from .._layout.placement import gather_to_host
from .._layout.ragged_rows import is_ragged
from .._streaming.prefetch import Prefetcher

PyTree = Any


def collect_to_array(source: Any, *, chunk_size: int = 4096) -> PyTree:
    """Returns the whole dataset as a PyTree of device arrays with leading axis N.

    Arguments:
        source: a source state or a ``dfn.Pipeline`` (its stages are not applied).
        chunk_size: records read per ``get_batch`` from a streaming source.

    Returns:
        a PyTree of ``jax.Array``s with the structure of ``element_spec(source)``.

    For an in-memory source this is its ``data`` as is: record order, no copy (a
    ``partitioned`` or ``host`` placement is gathered and put on the default device). A
    streaming source (or a pipeline over one, whose stages are not applied) is read for
    one epoch from its current position in chunks of ``chunk_size`` records, in stream
    order, and the result is moved to the device once. Use it for staged training: put
    the arrays into ``dfn.from_arrays`` or index them yourself.

    ```python
    import numpy as np, datarax_fn as dfn
    arrays = dfn.collect_to_array(dfn.from_arrays({"x": np.arange(5, dtype=np.int32)}))
    assert arrays["x"].tolist() == [0, 1, 2, 3, 4]
    ```
    """
    if isinstance(source, Pipeline):
        source = source.source
    if isinstance(source, EagerSource):
        if source.placement.kind in ("device", "replicated"):
            # Text held flat (RaggedRows) comes back as the padded arrays a batch would hold.
            return jax.tree.map(lambda x: jax.device_put(np.asarray(x)) if is_ragged(x) else x, source.data,
                                is_leaf=is_ragged)
        host = gather_to_host(source.data, source.placement, source.num_records, source.partitions)
        return jax.device_put(host)
    n = contract.num_records(source)
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
        state, batch = contract.get_batch(state, size)
        parts.append(jax.tree.map(np.asarray, batch))
        seen += size
    return jax.device_put(jax.tree.map(lambda *xs: np.concatenate(xs), *parts))


def prefetch_to_device(iterator: Iterable, size: int = 2, *, device: Any = None) -> Iterator:
    """Returns an iterator of the items of ``iterator``, moved to ``device``, up to ``size`` ahead.

    A background thread pulls items (any PyTree: batches, ``(state, batch)`` pairs) and
    ``jax.device_put``s them into a queue holding at most ``size``, so host reading and
    the transfer overlap with the device's work. The thread ends when the iterator is
    exhausted, when it raises (the error is re-raised here), or when this generator is
    closed or garbage collected (``break`` out of a ``for`` loop closes it).

    Arguments:
        iterator: any iterable of PyTrees.
        size: items moved ahead of the consumer.
        device: the target device; default: JAX's default device.

    Returns:
        a generator of the moved items.

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
    reader = Prefetcher(it, size, "datarax_fn-prefetch_to_device", functools.partial(jax.device_put, device=device))
    try:
        while True:
            item, ended = reader.get()
            if ended:
                return
            yield item
    finally:
        reader.close()
