"""The streaming source: a three-integer cursor over a backend that reads records on the host.

``StreamingSource`` is an ``equinox.Module`` whose leaves are ``index`` (records consumed
in this epoch), ``epoch`` and ``seed``; the backend handle is static. The same stream
semantics as the eager source hold: epoch ``e`` visits every record once in an order
fixed by ``(seed, e)``, batches straddle epochs, and there is no short last batch.

``get_batch`` runs on the host (never under ``jit``). One bounded background thread reads
and converts the next chunks while the caller trains. Batches are NumPy arrays in host
memory, the form a jitted step takes directly (and what ``tf.data``/grain hand out):
a per-batch ``device_put`` here would cost as much as the rest of ``get_batch`` together.
Wrap the batches in ``dfn.prefetch_to_device`` to overlap the copy with compute. The
reader lives in the static handle and only caches work: it is reused when the state
asked for is the position it has reached, and reopened (``backend.open(epoch, seed,
index)``, or ``open_partition`` per partition) otherwise, so the output depends on the
state alone and an old state replays exactly.

End of stream: with ``num_epochs=None`` the stream never ends. With ``num_epochs=k``,
``get_batch`` raises :class:`EndOfStream` when fewer than ``size`` records remain before
epoch ``k``; the partial records are dropped and ``dfn.iterate`` simply stops.

Partitions (``partitions=C > 1``, see ``_layout.partitions``): each batch takes ``size // C``
records of every partition, each partition read from its own position by
``backend.open_partition``; one background thread interleaves them (``reader``), and
``dfn.get_global_batch`` reads only the partitions of this process's rows. With
``num_epochs=k`` the stream ends, decided from the cursor alone so that every process
ends at the same step, when a batch would take a record beyond epoch ``k`` of the
shortest partition.

Filtering and expanding (a backend whose ``changes_rows()`` is True: the loaders' ``filter=``,
or a ``transform`` that changes the row count): a record has no input position of its own,
so the state also holds ``offset`` and a position is ``(epoch, index, offset)``: ``index``
is the input position of the first row of the chunk being served and ``offset`` the records
of that chunk already served. Resuming reopens the backend at ``index`` (chunk boundaries
are the same from any chunk start) and skips ``offset`` records: at most one chunk is read
again. The records per epoch are unknown (``num_records`` is None). With ``partitions=C > 1``
every partition has its own position, so ``index``, ``epoch`` and ``offset`` hold one per
partition, and ``get_global_batch`` gathers the positions of the partitions other processes
read once per step, so that every process holds the same state. A stream that keeps the row
count has ``offset=None``: the same leaves and cursor as before. ``served`` (None there) counts
the records such a stream has served since it began: every partition has served ``served / C``,
so a record's place in its partition's stream is known whatever the batch sizes were.

Reading (the reader cache and the rules that move a position) lives in ``read``; the reader,
workers and prefetch queue below it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Int, UInt32

from .._layout.partitions import (
    check_partitions,
    owned_partitions,
    partition_offsets,
    process_rows,
)
from .._state import checks, contract, cursors, tracing
from .read import (
    EndOfStream,
    gather_positions,
    positions,
    read,
    with_position,
    with_positions,
)
from .reader import Reader
from .workers import check_workers

PyTree = Any


@runtime_checkable
class StreamingBackend(Protocol):
    """What a streaming backend provides to a ``StreamingSource`` (HF and TFDS implement it).

    Write one for any record reader and wrap it with ``dfn.from_backend``. ``info``
    (any metadata, returned by ``dfn.dataset_info``) is optional, and so is
    ``open_partition(partition, partitions, epoch, seed, start)``: the records of one
    canonical partition (file-order records ``[c * N // C, (c + 1) * N // C)``) in that
    partition's epoch order, from its position ``start``, which ``partitions=C > 1``
    needs (see ``docs/distributed.md``); ``open(e, s, i)`` is then
    ``open_partition(0, 1, e, s, i)``. So is ``open_deferred`` (the same arguments; yields
    ``Deferred`` chunks whose preparation worker threads run) with ``changes_rows()``: True
    when a chunk's records may differ in number from its ``Deferred.rows`` input rows
    (positions then count input rows, and a chunk must have the same boundaries when the
    backend is opened at its first row).

    ```python
    import jax, numpy as np, datarax_fn as dfn

    class Squares:
        def open(self, epoch, seed, start):
            for lo in range(start, 10, 4):
                x = np.arange(lo, min(lo + 4, 10), dtype=np.int32)
                yield {"x": x, "y": x * x}
        def num_records(self):
            return 10
        def element_spec(self):
            return {"x": jax.ShapeDtypeStruct((), np.int32), "y": jax.ShapeDtypeStruct((), np.int32)}
        def fingerprint(self):
            return "squares-v1"

    state = dfn.from_backend(Squares())
    state, batch = dfn.get_batch(state, 3)
    assert batch["y"].tolist() == [0, 1, 4] and isinstance(Squares(), dfn.StreamingBackend)
    state.close()
    ```
    """

    def open(self, epoch: int, seed: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        """Returns an iterator of record chunks (dicts of arrays) of ``epoch`` from record ``start`` on."""
        ...

    def num_records(self) -> int | None:
        """Returns the records per epoch, or None when unknown."""
        ...

    def element_spec(self) -> PyTree:
        """Returns a ``jax.ShapeDtypeStruct`` per leaf for one record, without consuming."""
        ...

    def fingerprint(self) -> str:
        """Returns a string that identifies the records and their order (data and options)."""
        ...


# ----------------------------------------------------------------------------- handle


class _Handle(contract.Static):
    """The static part of a StreamingSource: the backend and its reader.

    Compares by the backend's type and fingerprint, so two sources over the same
    stream have equal tree structures.
    """

    __slots__ = ("__weakref__", "_spec", "backend", "closes", "lock", "num_workers", "prefetch", "reader")

    def __init__(self, backend: Any, prefetch: int = 2, num_workers: int = 1):
        self.backend = backend
        fingerprint = backend.fingerprint()
        if not isinstance(fingerprint, str):
            raise TypeError(
                f"{type(backend).__name__}.fingerprint() must return a str; got {type(fingerprint).__name__}."
            )
        super().__init__(backend, (type(backend).__module__, type(backend).__qualname__, fingerprint))
        self.reader: Reader | None = None
        self.lock = threading.Lock()
        self.closes = 0  # close() calls so far: a reader built while one ran is closed at once
        self.prefetch = prefetch
        self.num_workers = num_workers
        self._spec = None

    def spec(self) -> PyTree:
        if self._spec is None:
            self._spec = self.backend.element_spec()
        return self._spec

    def close(self) -> None:
        # Not under the lock: a get_batch on another thread may hold it while it waits on a
        # backend that blocks (a stalled filesystem). Closing the reader wakes that read with
        # StreamClosed, and the read's own error path drops the reader.
        self.closes += 1
        reader = self.reader
        if reader is not None:
            reader.close()
        if self.lock.acquire(blocking=False):
            try:
                if self.reader is reader:
                    self.reader = None
            finally:
                self.lock.release()

    def __repr__(self) -> str:
        return f"Handle({type(self.backend).__name__})"


# ----------------------------------------------------------------------------- state


class StreamingSource(contract.Source):
    """A host-side stream: the ``index`` / ``epoch`` / ``seed`` cursor over a static backend.

    Immutable; ``dfn.get_batch(state, size)`` returns a new state. Build one with
    ``dfn.from_hf(..., streaming=True)``, ``dfn.from_tfds`` or ``dfn.from_backend``.
    ``partitions`` is the number of canonical partitions the stream is defined over
    (1: the backend's own epoch order).
    """

    # Host-side NumPy: the stream is read on the host, so the cursor stays there. 0-d, or one
    # per partition (C,) for a partitioned stream that filters or expands (see the module doc).
    index: Int[np.ndarray, "*partitions"]
    epoch: Int[np.ndarray, "*partitions"]
    seed: UInt32[np.ndarray, ""]
    backend: _Handle = eqx.field(static=True)
    shuffle: bool = eqx.field(static=True, default=False)
    name: str = eqx.field(static=True, default="stream")
    num_epochs: int | None = eqx.field(static=True, default=None)
    partitions: int = eqx.field(static=True, default=1)
    offset: Int[np.ndarray, "*partitions"] | None = None  # records served of the chunk at `index`; None: one per input row
    served: Int[np.ndarray, ""] | None = None  # records served since the stream began, with `offset`

    def close(self) -> None:
        """Stops the background reading now; returns at once, also from another thread.

        A ``get_batch`` waiting on the reader meanwhile raises ``StreamClosed``; a backend read
        still in progress finishes in the background and its result is discarded. Reading also
        stops when the state is garbage collected and when the program exits.
        """
        self.backend.close()


def make_streaming(
    backend: StreamingBackend,
    *,
    shuffle: bool = False,
    seed: int = 0,
    name: str = "stream",
    num_epochs: int | None = None,
    prefetch: int = 2,
    partitions: int = 1,
    num_workers: int | None = None,
) -> StreamingSource:
    """Returns a ``StreamingSource`` at epoch 0, index 0 over ``backend``.

    Arguments:
        backend: a ``dfn.StreamingBackend``; ``open(epoch, seed, start)`` must yield
            the records of that epoch in the order ``shuffle`` and ``seed`` fix.
        shuffle: recorded in the cursor (the backend does the shuffling).
        seed: an int in ``[0, 2**32)``, handed to ``backend.open``.
        name: a label for error messages.
        num_epochs: ``None`` streams forever; ``k`` raises ``dfn.EndOfStream`` after ``k`` epochs.
        prefetch: chunks read ahead, one budget for all the partitions a process reads (at
            least ``num_workers``); each partition also holds the chunk it is serving, so
            lower the loader's ``chunk_size`` for many partitions of large records.
        partitions: the number ``C`` of canonical partitions (see ``docs/distributed.md``);
            ``C > 1`` needs ``backend.open_partition`` and a known ``num_records()``, makes
            every batch size a multiple of ``C``, and lets ``dfn.get_global_batch`` read
            only each process's partitions.
        num_workers: threads that prepare chunks (decode, the loaders' ``transform``, conversion)
            in parallel, for a backend that yields its chunks as deferred work (the HF and TFDS
            backends do); ``None``: the cores this process may use (CPU affinity and cgroup
            quota); ``1``: on the reader thread. The records and their order are the same for
            every value. With more than one, a ``transform`` runs on several threads at once.

    Returns:
        the state; its fingerprint (``backend.fingerprint()``) is read once, here.
    """
    missing = [m for m in ("open", "num_records", "element_spec", "fingerprint") if not callable(getattr(backend, m, None))]
    if missing:
        raise TypeError(
            f"{name}: the backend {type(backend).__name__} lacks {missing}; a dfn.StreamingBackend needs "
            "open(epoch, seed, start), num_records(), element_spec() and fingerprint()."
        )
    seed = checks.check_seed(seed, name)
    if num_epochs is not None:
        num_epochs = checks.check_epochs(num_epochs, f"{name}: num_epochs")
    if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 1:
        raise ValueError(f"prefetch must be an int >= 1 (chunks read ahead); got prefetch={prefetch!r}.")
    partitions = check_partitions(partitions, backend.num_records(), name)
    if partitions > 1 and not callable(getattr(backend, "open_partition", None)):
        raise TypeError(
            f"{name}: partitions={partitions} needs a backend that reads one partition at a time, but "
            f"{type(backend).__name__} has no open_partition(partition, partitions, epoch, seed, start). "
            "Use partitions=1, or add open_partition to the backend."
        )
    changes = callable(getattr(backend, "changes_rows", None)) and bool(backend.changes_rows())
    if changes and not callable(getattr(backend, "open_deferred", None)):
        raise TypeError(
            f"{name}: {type(backend).__name__}.changes_rows() is True, which needs open_deferred(partition, "
            "partitions, epoch, seed, start) yielding Deferred chunks of known input rows; add it, or count "
            "positions by record (changes_rows() False)."
        )
    shape = (partitions,) if changes and partitions > 1 else ()
    return StreamingSource(
        index=np.zeros(shape, np.int32),
        epoch=np.zeros(shape, np.int32),
        offset=np.zeros(shape, np.int32) if changes else None,
        served=np.zeros((), np.int32) if changes else None,
        seed=np.asarray(seed, np.uint32),
        backend=_Handle(backend, int(prefetch), check_workers(num_workers, name)),
        shuffle=checks.check_flag(shuffle, "shuffle", name),
        name=str(name),
        num_epochs=num_epochs,
        partitions=partitions,
    )


def _check_host(state: StreamingSource, fn: str) -> None:
    if tracing.is_traced(state.epoch, state.index, state.seed):
        raise TypeError(
            f"{fn}: a StreamingSource reads on the host and cannot run under jax.jit / scan / vmap. "
            "Call dfn.get_batch(state, size) outside jit and pass the batch into your jitted step; "
            "or load eagerly (dfn.from_hf(..., streaming=False)) to batch inside jit."
        )


@contract.get_batch.register
def _get_batch(state: StreamingSource, size: int, key: Any = None):
    _check_host(state, "get_batch")
    size = checks.check_size(size)
    if key is not None:
        raise TypeError(
            "get_batch: a StreamingSource cannot draw random records with key=; it reads in order. "
            "Use shuffle=True when building it, or load eagerly for keyed access."
        )
    return read(state, size, tuple(range(state.partitions)))


@contract.get_global_batch.register
def _(state: StreamingSource, global_size: int, sharding: jax.sharding.Sharding):
    # Each process reads only the partitions of its rows; all advance by the whole batch.
    _check_host(state, "get_global_batch")
    size = checks.check_size(global_size, "get_global_batch")
    procs = jax.process_count()
    if state.partitions == 1 and procs > 1:
        raise ValueError(
            f"get_global_batch: {state.name} has partitions=1, so each of the {procs} processes would read the "
            f"whole stream. Build it with partitions= a multiple of the process count, e.g. partitions={procs} "
            f"(dfn.from_backend(backend, partitions={procs}); the loaders take partitions= too)."
        )
    start, stop = process_rows(sharding, size)
    parts = tuple(owned_partitions(start, stop, size, state.partitions, f"get_global_batch ({state.name})"))
    gather = gather_positions if state.offset is not None and procs > 1 else None
    state, local = read(state, size, parts, gather)
    batch = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x, (size, *x.shape[1:])), local
    )
    return state, batch


@contract.get_batch_at.register
def _(state: StreamingSource, start: Any, size: int, key: Any = None):
    raise TypeError(
        "get_batch_at: a StreamingSource has no random access; use dfn.get_batch(state, size), or load "
        "eagerly (dfn.from_hf(..., streaming=False))."
    )


@contract.element_spec.register
def _(state: StreamingSource):
    return state.backend.spec()


@contract.num_records.register
def _(state: StreamingSource):
    n = state.backend.backend.num_records()
    return None if n is None or state.offset is not None else int(n)  # filtered or expanded: unknown


@contract.iterate.register
def _(state: StreamingSource, size: int, *, epochs: int = 1):
    _check_host(state, "iterate")
    if contract.num_records(state) is not None and state.num_epochs is None:
        return contract.iterate_batches(state, size, epochs)
    checks.check_size(size, "iterate")
    return _iterate_until(state, size, checks.check_epochs(epochs))


def _progress(state: StreamingSource) -> list[tuple[int, ...]]:
    """Returns each partition's position (one for a stream that keeps the row count)."""
    return [(int(state.epoch), int(state.index))] if state.offset is None else positions(state)


def _iterate_until(state: StreamingSource, size: int, epochs: int) -> Iterator[tuple[StreamingSource, PyTree]]:
    # The length is unknown (or the stream ends): walk until every partition has started
    # `epochs` more epochs at its starting position, or until EndOfStream.
    stop = [(e + epochs, *rest) for e, *rest in _progress(state)]
    while True:
        try:
            state, batch = contract.get_batch(state, size)
        except EndOfStream:
            return
        yield state, batch
        if all(p >= s for p, s in zip(_progress(state), stop)):
            return


def _stream_key(state: StreamingSource) -> dict[str, Any]:
    return {"fingerprint": state.backend.key[2], "shuffle": state.shuffle, "seed": int(state.seed)}


@contract.cursor.register
def _(state: StreamingSource):
    key = _stream_key(state)
    if state.offset is not None:
        key["offset"], key["served"] = cursors.ints(state.offset), int(state.served)
    return cursors.make_cursor("streaming", state.index, state.epoch, key.pop("seed"), state.partitions, **key)


@contract.restore_cursor.register
def _(state: StreamingSource, cursor: dict[str, Any]):
    if state.offset is None:
        index, epoch = cursors.check_cursor(cursor, "streaming", _stream_key(state), contract.num_records(state),
                                          state.partitions)
        return with_position(state, epoch, index)
    n = state.backend.backend.num_records()
    lengths = [n] if state.partitions == 1 else np.diff(partition_offsets(n, state.partitions)).tolist()
    return with_positions(state, *cursors.check_chunk_cursor(cursor, "streaming", _stream_key(state), lengths))


@contract.dataset_info.register
def _(state: StreamingSource):
    return getattr(state.backend.backend, "info", None)


__all__ = ["EndOfStream", "StreamingBackend", "StreamingSource", "make_streaming"]
