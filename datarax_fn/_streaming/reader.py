"""Reading a backend's partitions epoch after epoch, interleaved on one background thread.

A :class:`Reader` serves the records of some partitions of a stream (all of them, or only
those a process owns) from given per-partition positions ``(epoch, position)`` on. Each
partition is read by its own chain of ``backend.open_partition`` calls, one per epoch
(``backend.open`` for an unpartitioned stream); the chains are interleaved on a single
``Prefetcher`` thread, always advancing the partition that has produced the fewest records,
so the thread count does not grow with the number of partitions and the records buffered
per partition stay within about one chunk of what a batch takes from it. A backend with
``open_deferred`` reads there and leaves each chunk's preparation to ``num_workers``
worker threads (``workers``); chunks are served in read order whatever the worker count.

A partition's chain reports the end of each epoch, the end of the stream (after
``num_epochs``) and its own errors as items; they surface only when a caller takes
records of that partition, so one partition's failure never changes another's batches.
"""

from __future__ import annotations

import concurrent.futures as cf
import heapq
from collections import deque
from collections.abc import Iterator
from typing import Any

import jax

from .prefetch import Prefetcher, StreamClosed
from .workers import Deferred, prepared

_CHUNK, _EPOCH_END, _DONE, _FAILED = range(4)


def rows(chunk: Any) -> int:
    """Returns the number of records in a chunk (its first leaf's length, or a ``Deferred``'s rows)."""
    if isinstance(chunk, Deferred):
        return chunk.rows
    return len(jax.tree.leaves(chunk)[0])


def _epochs(backend: Any, part: int, parts: int, seed: int, epoch: int, start: int, length: int | None,
            num_epochs: int | None, name: str) -> Iterator[tuple[int, Any]]:
    """Yields ``(_CHUNK, chunk)`` and ``(_EPOCH_END, epoch)`` items of one partition from ``(epoch, start)`` on."""
    while num_epochs is None or epoch < num_epochs:
        deferred = getattr(backend, "open_deferred", None)  # chunks whose preparation the workers run
        if deferred is not None:
            it = deferred(part, parts, epoch, seed, start)
        else:
            it = backend.open(epoch, seed, start) if parts == 1 else backend.open_partition(part, parts, epoch, seed, start)
        got = start
        try:
            for chunk in it:
                n = rows(chunk)
                got += n
                if length is not None and got > length:
                    raise ValueError(
                        f"{name}: {type(backend).__name__}.open_partition({part}, {parts}, epoch={epoch}, ...) "
                        f"yielded more than the partition's {length} records; it must stop after the records "
                        f"of its partition (file-order records [c * N // C, (c + 1) * N // C))."
                    )
                if n:
                    if isinstance(chunk, Deferred) and not chunk.where:
                        chunk.where = (f"{name}: partition {part} of {parts}, epoch {epoch}, positions "
                                       f"{got - n}..{got - 1}")
                    yield _CHUNK, chunk
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        if got == 0:
            raise ValueError(f"{name}: epoch {epoch} has no records; the dataset split is empty.")
        if length is not None and got != length:
            raise ValueError(
                f"{name}: {type(backend).__name__}.open_partition({part}, {parts}, epoch={epoch}, ...) "
                f"yielded {got} records from position 0; partition {part} of {parts} has {length} "
                "(the backend's num_records() and its partitions disagree)."
            )
        yield _EPOCH_END, epoch
        epoch, start = epoch + 1, 0


def _interleave(chains: dict[int, Iterator]) -> Iterator[tuple[int, int, Any]]:
    """Yields ``(partition, kind, value)`` from every chain, the one that has produced the fewest records first."""
    heap = [(0, c) for c in chains]
    try:
        while heap:
            produced, c = heap[0]
            try:
                kind, value = next(chains[c])
            except StopIteration:
                heapq.heappop(heap)
                yield c, _DONE, None
                continue
            except Exception as err:  # handed to whoever takes this partition's records
                heapq.heappop(heap)
                yield c, _FAILED, err
                continue
            if kind == _CHUNK:
                heapq.heapreplace(heap, (produced + rows(value), c))
            yield c, kind, value
    finally:
        for chain in chains.values():
            chain.close()


class Reader:
    """Serves records of ``starts``' partitions; ``pos[c]`` is partition ``c``'s next ``(epoch, position)``.

    ``at`` is free for the owner to record which state the reader has reached.
    """

    def __init__(self, backend: Any, partitions: int, seeds: dict[int, int], starts: dict[int, tuple[int, int]],
                 lengths: dict[int, int | None], num_epochs: int | None, prefetch: int, name: str,
                 num_workers: int = 1):
        self.at: Any = None
        self.pos = dict(starts)
        self.pending: dict[int, deque] = {c: deque() for c in starts}
        chains = {
            c: _epochs(backend, c, partitions, seeds[c], e, p, lengths[c], num_epochs, name)
            for c, (e, p) in starts.items()
        }
        # One read-ahead budget for all the partitions: memory stays about `prefetch` chunks
        # plus the chunk each partition is serving, whatever the partition count (the queue
        # used to hold a round over the partitions besides, which doubled memory at C = 64).
        # Chunks in the queue may still be in preparation on the workers: it holds at least
        # one per worker to keep them all busy.
        self.prefetcher = Prefetcher(prepared(_interleave(chains), num_workers), max(prefetch, num_workers),
                                     "datarax_fn-prefetch", join_timeout=2.0)

    def close(self) -> None:
        self.prefetcher.close()

    def _head(self, c: int) -> list:
        while not self.pending[c]:
            item, ended = self.prefetcher.get()
            if ended:  # _interleave reports every partition's end before it stops
                raise RuntimeError("datarax_fn reader: the partition stream stopped early")
            k, kind, value = item
            self.pending[k].append([kind, value, 0])
        return self.pending[c][0]

    def take(self, c: int, k: int) -> list[Any]:
        """Returns up to ``k`` records of partition ``c`` as chunk slices; fewer only when its stream ended."""
        parts, got = [], 0
        while got < k:
            head = self._head(c)
            kind, value, lo = head
            if kind == _DONE:
                break
            if kind == _FAILED:
                raise value
            if kind == _EPOCH_END:
                self.pending[c].popleft()
                self.pos[c] = (value + 1, 0)
                continue
            if isinstance(value, cf.Future):
                value = head[1] = self._result(value)
            m = min(k - got, rows(value) - lo)
            parts.append(jax.tree.map(lambda x: x[lo : lo + m], value))
            head[2] += m
            got += m
            e, p = self.pos[c]
            self.pos[c] = (e, p + m)
            if head[2] == rows(value):
                self.pending[c].popleft()
        return parts

    def _result(self, fut: cf.Future) -> Any:
        # Waits in short steps so that close() from another thread wakes a reader waiting on a
        # worker (a worker's own read may block, e.g. on a stalled filesystem).
        while True:
            try:
                return fut.result(timeout=0.05)
            except cf.TimeoutError:
                if self.prefetcher.closed:
                    raise StreamClosed(f"{self.prefetcher.name}: the reader was closed while a read waited on it") from None
            except cf.CancelledError:
                raise StreamClosed(f"{self.prefetcher.name}: the reader was closed while a read waited on it") from None

    def skip_epoch_end(self, c: int) -> bool:
        """Returns True, moving partition ``c`` to its next epoch, when its current epoch has no records left."""
        kind, value, _ = self._head(c)
        if kind != _EPOCH_END:
            return False
        self.pending[c].popleft()
        self.pos[c] = (value + 1, 0)
        return True


__all__ = ["Reader", "rows"]
