"""The streaming source: a three-integer cursor over a backend that reads records on the host.

``StreamingSource`` is an ``equinox.Module`` whose leaves are ``epoch``, ``position``
(records consumed in this epoch) and ``seed``; the backend handle is static. The same
stream semantics as the eager source hold: epoch ``e`` visits every record once in an
order fixed by ``(seed, e)``, batches straddle epochs, and there is no short last batch.

``get_batch`` runs on the host (never under ``jit``). A bounded background thread reads
and converts the next chunks while the caller trains. Batches are NumPy arrays in host
memory, the form a jitted step takes directly (and what ``tf.data``/grain hand out):
a per-batch ``device_put`` here would cost as much as the rest of ``get_batch`` together.
Wrap the batches in ``dfn.prefetch_to_device`` to overlap the copy with compute. The reader lives in the static
handle and only caches work: it is reused when the state asked for is the position it
has reached, and reopened (``backend.open(epoch, seed, position)``) otherwise, so the
output depends on the state alone and an old state replays exactly.

End of stream: with ``num_epochs=None`` the stream never ends. With ``num_epochs=k``,
``get_batch`` raises :class:`EndOfStream` (a ``StopIteration``) when fewer than ``size``
records remain before epoch ``k``; the partial records are dropped and ``dfn.iterate``
simply stops.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Int, UInt32

from . import _core

PyTree = Any


class EndOfStream(StopIteration):
    """Raised by ``get_batch`` on a ``StreamingSource`` whose ``num_epochs`` are used up."""


@runtime_checkable
class StreamingBackend(Protocol):
    """What a streaming backend (HF, TFDS) provides to ``StreamingSource``."""

    info: Any

    def open(self, epoch: int, seed: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        """Yields converted record chunks of epoch ``epoch`` from record ``start`` on."""
        ...

    def num_records(self) -> int | None:
        """Returns the records per epoch, or None when unknown."""
        ...

    def element_spec(self) -> PyTree:
        """Returns a ``jax.ShapeDtypeStruct`` per leaf for one record, without consuming."""
        ...


# ----------------------------------------------------------------------------- prefetch


_LIVE: weakref.WeakSet = weakref.WeakSet()
_END, _CHUNK, _ERROR = "end", "chunk", "error"


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _produce(it: Iterator, q: queue.Queue, stop: threading.Event) -> None:
    # Holds only the iterator, the queue and the event: never the reader, so the
    # reader (and its state) can be garbage collected while this thread runs.
    try:
        for chunk in it:
            if not _put(q, (_CHUNK, chunk), stop):
                return
        _put(q, (_END, None), stop)
    except BaseException as err:  # handed to the consumer, re-raised there
        _put(q, (_ERROR, err), stop)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass


def _shutdown(stop: threading.Event, q: queue.Queue, thread: threading.Thread, timeout: float = 2) -> None:
    """Stops a bounded-queue producer thread: set ``stop``, drain ``q``, join ``thread``."""
    stop.set()
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
    if thread is not threading.current_thread() and thread.is_alive():
        # The producer notices `stop` within 50 ms; a backend stuck in its own cleanup
        # cannot hang the caller (the thread is a daemon and ends with the backend).
        thread.join(timeout=timeout)


class _Reader:
    """A prefetching cursor into one epoch; ``at`` is the next unread ``(epoch, seed, position)``."""

    def __init__(self, backend: Any, epoch: int, seed: int, start: int, prefetch: int):
        self.at = (epoch, seed, start)
        self.q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self.stop = threading.Event()
        self.chunk: dict | None = None
        self.offset = 0
        self.ended = False
        self.thread = threading.Thread(
            target=_produce, args=(backend.open(epoch, seed, start), self.q, self.stop),
            name="datarax_fn-prefetch", daemon=True,
        )
        self.thread.start()
        self._finalizer = weakref.finalize(self, _shutdown, self.stop, self.q, self.thread)
        _LIVE.add(self)

    def close(self) -> None:
        self._finalizer()

    def _next(self) -> None:
        kind, item = self.q.get()
        if kind == _ERROR:
            self.ended = True
            raise item
        if kind == _END:
            self.ended = True
        else:
            self.chunk, self.offset = item, 0

    def at_epoch_end(self) -> bool:
        """Returns True when every record of the epoch has been taken (looks one chunk ahead)."""
        if self.chunk is None and not self.ended:
            self._next()
        return self.ended

    def take(self, k: int) -> list[dict]:
        """Returns up to ``k`` records as chunk slices; fewer only when the epoch ended."""
        parts, got = [], 0
        while got < k and not self.ended:
            if self.chunk is None:
                self._next()
                if self.ended:
                    break
            n = _rows(self.chunk)
            m = min(k - got, n - self.offset)
            lo = self.offset
            parts.append(jax.tree.map(lambda x: x[lo : lo + m], self.chunk))
            self.offset += m
            got += m
            if self.offset >= n:
                self.chunk = None
        e, s, p = self.at
        self.at = (e, s, p + got)
        return parts


def _rows(chunk: PyTree) -> int:
    return len(jax.tree.leaves(chunk)[0])


@atexit.register
def _close_all() -> None:
    for reader in list(_LIVE):
        reader.close()


class _Handle:
    """The static part of a StreamingSource: the backend and its reader (hashed by identity)."""

    __slots__ = ("backend", "reader", "lock", "prefetch", "_spec", "__weakref__")

    def __init__(self, backend: Any, prefetch: int = 2):
        self.backend = backend
        self.reader: _Reader | None = None
        self.lock = threading.Lock()
        self.prefetch = prefetch
        self._spec = None

    def spec(self) -> PyTree:
        if self._spec is None:
            self._spec = self.backend.element_spec()
        return self._spec

    def close(self) -> None:
        with self.lock:
            if self.reader is not None:
                self.reader.close()
                self.reader = None

    def __repr__(self) -> str:
        return f"Handle({type(self.backend).__name__})"


# ----------------------------------------------------------------------------- state


class StreamingSource(eqx.Module):
    """A host-side stream: the ``epoch`` / ``position`` / ``seed`` cursor over a static backend.

    Immutable; ``dfn.get_batch(state, size)`` returns a new state. Build one with
    ``dfn.from_hf(..., streaming=True)``, ``dfn.HFStreamingSource`` or ``dfn.from_tfds``.
    """

    # Host-side 0-d NumPy scalars: the stream is read on the host, so the cursor stays there.
    epoch: Int[np.ndarray, ""]
    position: Int[np.ndarray, ""]
    seed: UInt32[np.ndarray, ""]
    backend: _Handle = eqx.field(static=True)
    shuffle: bool = eqx.field(static=True, default=False)
    name: str = eqx.field(static=True, default="stream")
    num_epochs: int | None = eqx.field(static=True, default=None)

    def __len__(self) -> int:
        return _num_records(self)

    def close(self) -> None:
        """Stops the prefetch thread now (it also stops when the state is garbage collected)."""
        self.backend.close()


def make_streaming(
    backend: StreamingBackend,
    *,
    shuffle: bool = False,
    seed: int = 0,
    name: str = "stream",
    num_epochs: int | None = None,
    prefetch: int = 2,
) -> StreamingSource:
    """Returns a ``StreamingSource`` at epoch 0, position 0 over ``backend``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32); got seed={seed!r}.")
    if num_epochs is not None and (not isinstance(num_epochs, int) or num_epochs < 1):
        raise ValueError(f"num_epochs must be None (forever) or an int >= 1; got num_epochs={num_epochs!r}.")
    if not isinstance(prefetch, int) or prefetch < 1:
        raise ValueError(f"prefetch must be an int >= 1 (chunks read ahead); got prefetch={prefetch!r}.")
    return StreamingSource(
        epoch=np.zeros((), np.int32),
        position=np.zeros((), np.int32),
        seed=np.asarray(seed, np.uint32),
        backend=_Handle(backend, prefetch),
        shuffle=bool(shuffle),
        name=str(name),
        num_epochs=num_epochs,
    )


def _with(state: StreamingSource, epoch: int, position: int) -> StreamingSource:
    # Per-batch hot path on the host thread that competes with the prefetch thread for the
    # GIL. The cursor of a host-side source stays in host memory (0-d NumPy int32): a
    # device_put per scalar costs ~0.1 ms in JAX's dispatch, and nothing reads it on device.
    return _core.replace(state, epoch=np.asarray(epoch, np.int32), position=np.asarray(position, np.int32))


def _check_host(state: StreamingSource, fn: str) -> None:
    if any(isinstance(x, jax.core.Tracer) for x in (state.epoch, state.position, state.seed)):
        raise TypeError(
            f"{fn}: a StreamingSource reads on the host and cannot run under jax.jit / scan / vmap. "
            "Call dfn.get_batch(state, size) outside jit and pass the batch into your jitted step; "
            "or load eagerly (dfn.from_hf(..., streaming=False)) to batch inside jit."
        )


def _concat(parts: list[PyTree]) -> PyTree:
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def _check_shapes(parts: list[PyTree], spec: PyTree, name: str) -> None:
    for part in parts:
        for (path, x), s in zip(jax.tree_util.tree_flatten_with_path(part)[0], jax.tree.leaves(spec)):
            if x.shape[1:] != s.shape or x.dtype != s.dtype:
                raise ValueError(
                    f"{name}: field {jax.tree_util.keystr(path)} changed to {x.shape[1:]} {x.dtype} from "
                    f"{s.shape} {s.dtype} mid-stream. Give ragged fields a fixed max_length so batch shapes "
                    "are static."
                )


@_core.get_batch.register
def _get_batch(state: StreamingSource, size: int, key: Any = None):
    _check_host(state, "get_batch")
    size = _core.check_size(size)
    if key is not None:
        raise TypeError(
            "get_batch: a StreamingSource cannot draw random records with key=; it reads in order. "
            "Use shuffle=True when building it, or load eagerly for keyed access."
        )
    h = state.backend
    epoch, pos, seed = int(state.epoch), int(state.position), int(state.seed)
    spec = h.spec()
    with h.lock:
        reader = h.reader
        if reader is None or reader.at != (epoch, seed, pos):
            if reader is not None:
                reader.close()
            reader = h.reader = _Reader(h.backend, epoch, seed, pos, h.prefetch)
        parts: list[PyTree] = []
        need = size
        try:
            while need:
                got = reader.take(need)
                _check_shapes(got, spec, state.name)
                parts += got
                need -= sum(_rows(p) for p in got)
                pos = reader.at[2]
                if need and reader.ended:
                    if pos == 0:
                        raise ValueError(f"{state.name}: epoch {epoch} has no records; the dataset split is empty.")
                    epoch, pos = epoch + 1, 0
                    if state.num_epochs is not None and epoch >= state.num_epochs:
                        raise EndOfStream(
                            f"{state.name}: the stream ended after num_epochs={state.num_epochs}; "
                            f"{size - need} of {size} records were left and dropped (no short batch)."
                        )
                    reader.close()
                    reader = h.reader = _Reader(h.backend, epoch, seed, 0, h.prefetch)
            last = state.num_epochs is not None and epoch + 1 >= state.num_epochs
            if not last and reader.at_epoch_end():
                # Normalise "end of epoch e" to "start of epoch e+1": a saved cursor never replays e.
                epoch, pos = epoch + 1, 0
                reader.close()
                reader = h.reader = _Reader(h.backend, epoch, seed, 0, h.prefetch)
        except BaseException:
            reader.close()
            h.reader = None
            raise
    if epoch > 2**31 - 1 or pos > 2**31 - 1:
        raise OverflowError(f"{state.name}: epoch/position passed 2**31 - 1; start a new state with a new seed.")
    return _with(state, epoch, pos), _concat(parts)


@_core.get_batch_at.register
def _(state: StreamingSource, start: Any, size: int, key: Any = None):
    raise TypeError(
        "get_batch_at: a StreamingSource has no random access; use dfn.get_batch(state, size), or load "
        "eagerly (dfn.from_hf(..., streaming=False))."
    )


@_core.element_spec.register
def _(state: StreamingSource):
    return state.backend.spec()


def _num_records(state: StreamingSource) -> int:
    n = state.backend.backend.num_records()
    if n is None:
        raise TypeError(
            f"{state.name}: the backend does not know how many records the stream has (e.g. a streamed "
            "hub dataset without split metadata). Count them once, or load eagerly."
        )
    return n


@_core.num_records.register
def _(state: StreamingSource):
    return _num_records(state)


@_core.iterate.register
def _(state: StreamingSource, size: int, *, epochs: int = 1):
    _check_host(state, "iterate")
    if state.backend.backend.num_records() is not None and state.num_epochs is None:
        return _core.iterate_batches(state, size, epochs)
    return _iterate_unknown(state, size, epochs)


def _iterate_unknown(state: StreamingSource, size: int, epochs: int):
    _core.check_size(size, "iterate")
    stop = int(state.epoch) + epochs
    target = int(state.position)
    while True:
        try:
            state, batch = _core.get_batch(state, size)
        except EndOfStream:
            return
        yield state, batch
        if int(state.epoch) > stop or (int(state.epoch) == stop and int(state.position) >= target):
            return


def _fingerprint(state: StreamingSource) -> str | None:
    fp = getattr(state.backend.backend, "fingerprint", None)
    return fp() if callable(fp) else None


@_core.cursor.register
def _(state: StreamingSource):
    return {
        "kind": "streaming",
        "epoch": int(state.epoch),
        "position": int(state.position),
        "seed": int(state.seed),
        "shuffle": state.shuffle,
        "name": state.name,
        "fingerprint": _fingerprint(state),
    }


@_core.restore_cursor.register
def _(state: StreamingSource, cursor: dict[str, Any]):
    if cursor.get("kind") != "streaming":
        raise ValueError(f"restore_cursor: a {cursor.get('kind')!r} cursor cannot restore a StreamingSource.")
    fp = _fingerprint(state)
    if cursor.get("fingerprint") != fp:
        raise ValueError(
            f"restore_cursor: the cursor was saved on a different stream (fingerprint {cursor.get('fingerprint')}, "
            f"this one {fp}). Rebuild the source with the same dataset, split, keys and options."
        )
    if bool(cursor.get("shuffle")) != state.shuffle:
        raise ValueError(f"restore_cursor: cursor has shuffle={cursor.get('shuffle')}, source has shuffle={state.shuffle}.")
    return _core.replace(
        _with(state, int(cursor["epoch"]), int(cursor["position"])), seed=np.asarray(int(cursor["seed"]), np.uint32)
    )


@_core.dataset_info.register
def _(state: StreamingSource):
    return getattr(state.backend.backend, "info", None)


__all__ = ["EndOfStream", "StreamingBackend", "StreamingSource", "make_streaming"]
