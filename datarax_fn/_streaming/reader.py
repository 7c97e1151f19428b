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

Positions count input rows: a chunk is noted with the position of its first input row and
the input rows it was read from, and the reader's position is ``(epoch, index, offset)``:
the chunk being served starts at input row ``index`` and ``offset`` of its records are
served. A chunk whose preparation keeps its row count (every chunk of most streams) makes
``index + offset`` the plain record position; one whose preparation filters or expands
rows (``Deferred.rows`` is the input count) resumes by reopening at ``index`` and skipping
``offset`` records, the only exact position when records and input rows differ.

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
            num_epochs: int | None, name: str) -> Iterator[tuple[int, Any, int]]:
    """Yields ``(_CHUNK, chunk, its first input position)`` and ``(_EPOCH_END, epoch, 0)`` items of one
    partition from ``(epoch, start)`` on."""
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
                    yield _CHUNK, chunk, got - n
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
        yield _EPOCH_END, epoch, 0
        epoch, start = epoch + 1, 0


def _interleave(chains: dict[int, Iterator]) -> Iterator[tuple[int, int, Any, int, int]]:
    """Yields ``(partition, kind, value, first input position, input rows)`` from every chain, the one that
    has produced the fewest records first."""
    heap = [(0, c) for c in chains]
    try:
        while heap:
            produced, c = heap[0]
            try:
                kind, value, at = next(chains[c])
            except StopIteration:
                heapq.heappop(heap)
                yield c, _DONE, None, 0, 0
                continue
            except Exception as err:  # handed to whoever takes this partition's records
                heapq.heappop(heap)
                yield c, _FAILED, err, 0, 0
                continue
            n = rows(value) if kind == _CHUNK else 0
            if n:
                heapq.heapreplace(heap, (produced + n, c))
            yield c, kind, value, at, n
    finally:
        for chain in chains.values():
            chain.close()


class Reader:
    """Serves records of ``starts``' partitions; ``pos[c]`` is partition ``c``'s next ``(epoch, index, offset)``.

    ``starts[c]`` is ``(epoch, index, offset)``: reading opens at input position ``index`` and
    skips ``offset`` records of the first chunk. ``at`` is free for the owner to record which
    state the reader has reached.
    """

    def __init__(self, backend: Any, partitions: int, seeds: dict[int, int],
                 starts: dict[int, tuple[int, int, int]], lengths: dict[int, int | None], num_epochs: int | None,
                 prefetch: int, name: str, num_workers: int = 1):
        self.at: Any = None
        self.name, self.partitions = name, partitions
        self.pos = dict(starts)
        self.skip = {c: o for c, (_, _, o) in starts.items()}
        # Records served in the epoch being read, and whether this reader read it from its start:
        # an epoch read whole that gave none (a filter that keeps nothing) would otherwise loop forever.
        self.served = dict.fromkeys(starts, 0)
        self.whole = {c: p == 0 and o == 0 for c, (_, p, o) in starts.items()}
        self.pending: dict[int, deque] = {c: deque() for c in starts}
        chains = {
            c: _epochs(backend, c, partitions, seeds[c], e, p, lengths[c], num_epochs, name)
            for c, (e, p, _) in starts.items()
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
            k, kind, value, at, n = item
            lo, self.skip[k] = (self.skip[k], 0) if kind == _CHUNK else (0, self.skip[k])
            self.pending[k].append([kind, value, lo, at, n])
        return self.pending[c][0]

    def take(self, c: int, k: int) -> list[Any]:
        """Returns up to ``k`` records of partition ``c`` as chunk slices; fewer only when its stream ended."""
        parts, got = [], 0
        while got < k:
            head = self._head(c)
            kind, value, lo, at, n = head
            if kind == _DONE:
                break
            if kind == _FAILED:
                raise value
            if kind == _EPOCH_END:
                self._end_epoch(c, value)
                continue
            if isinstance(value, cf.Future):
                value = head[1] = self._result(value)
            out = rows(value)
            if lo > out:
                raise RuntimeError(
                    f"{self.name}: the chunk at input position {at} (partition {c}) gave {out} records, fewer than "
                    f"the {lo} a cursor says were served from it; the data or the transform changed since the "
                    "cursor was saved. Rebuild the source and start from a new cursor."
                )
            m = min(k - got, out - lo)
            if m:
                parts.append(jax.tree.map(lambda x: x[lo : lo + m], value))
            head[2] = lo + m
            got += m
            self.served[c] += m
            e = self.pos[c][0]
            if head[2] == out:
                self.pending[c].popleft()
                self.pos[c] = (e, at + n, 0)
            else:
                self.pos[c] = (e, at, head[2])
        return parts

    def _end_epoch(self, c: int, epoch: int) -> None:
        self.pending[c].popleft()
        if self.whole[c] and not self.served[c]:
            where = f"partition {c} of {self.partitions}, " if self.partitions > 1 else ""
            raise ValueError(
                f"{self.name}: the filter/transform kept no record of a whole epoch ({where}epoch {epoch}), so the "
                "stream would read on forever without a batch. Check the filter's condition (True keeps a row)"
                + (", or use fewer partitions" if self.partitions > 1 else "") + "."
            )
        self.pos[c] = (epoch + 1, 0, 0)
        self.served[c], self.whole[c] = 0, True

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
        kind, value, *_ = self._head(c)
        if kind != _EPOCH_END:
            return False
        self._end_epoch(c, value)
        return True


__all__ = ["Reader", "rows"]
