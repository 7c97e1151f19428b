"""Partitioned composition: a stream of ``C`` canonical partitions packed and mixed partition by partition.

A stream built with ``partitions=C`` is ``C`` streams side by side (``docs/distributed.md``):
partition ``c`` holds the file-order records ``[c * N // C, (c + 1) * N // C)`` in its own
epoch order. ``dfn.pack`` and ``dfn.mix`` of such streams compose each partition apart
(``by_partition``) into a ``Partitioned`` state of ``C`` parts: a batch of ``B`` rows takes
``B // C`` rows of every part, partition-major, as the stream lays out its own batches. So
the global stream does not depend on the number of processes, and ``dfn.get_global_batch``
reads, packs and mixes only the parts of this process's rows.

A packed part moves by how its records pack, which only the process reading it knows: after
each global batch the processes send one another the cursors of the parts they read (one
all-gather of a few hundred bytes a part), so every process holds the whole state, as with
any other source, and any of them can save the cursor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from .._layout.exchange import gather_json
from .._layout.partitions import (
    check_batch_size,
    owned_partitions,
    partition_offsets,
    partition_position,
    partition_seed,
    process_rows,
)
from .._state import checks, contract, cursors, tracing
from .._streaming.read import positions
from .._streaming.source import StreamingSource, make_streaming
from .positions import restore_each

PyTree = Any


class Partitioned(contract.Source):
    """One composed state per canonical partition of the streams it was built from.

    ``dfn.pack`` and ``dfn.mix`` return one for streams with ``partitions=C > 1``; a batch
    takes ``size // C`` rows of every part, partition-major.
    """

    parts: tuple

    def close(self) -> None:
        """Stops the background reading of every stream inside; returns at once."""
        for stream in _streams(self):
            stream.close()


def _streams(state: Any) -> Iterator[StreamingSource]:
    if isinstance(state, StreamingSource):
        yield state
    for child in (getattr(state, "parts", None) or getattr(state, "children", None) or
                  ([state.source] if hasattr(state, "source") else [])):
        yield from _streams(child)


# ----------------------------------------------------------------------------- building


class _Partition:
    """A backend over one canonical partition of a partitioned backend: partition ``c`` of ``C`` as a stream."""

    def __init__(self, backend: Any, partition: int, partitions: int):
        self.backend, self.partition, self.partitions = backend, partition, partitions
        offsets = partition_offsets(backend.num_records(), partitions)
        self.length = int(offsets[partition + 1] - offsets[partition])
        if callable(getattr(backend, "open_deferred", None)):
            self.open_deferred = self._open_deferred  # the reader hands chunk preparation to its workers
        if hasattr(backend, "info"):
            self.info = backend.info
        if callable(getattr(backend, "changes_rows", None)):
            self.changes_rows = backend.changes_rows  # a partition of a stream that filters or expands does too

    def _seed(self, seed: int) -> int:
        return partition_seed(seed, self.partition, self.partitions)  # the partition's order in the whole stream

    def open(self, epoch: int, seed: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        return self.backend.open_partition(self.partition, self.partitions, epoch, self._seed(seed), start)

    def _open_deferred(self, part: int, parts: int, epoch: int, seed: int, start: int) -> Iterator[Any]:
        return self.backend.open_deferred(self.partition, self.partitions, epoch, self._seed(seed), start)

    def num_records(self) -> int:
        return self.length

    def element_spec(self) -> PyTree:
        return self.backend.element_spec()

    def fingerprint(self) -> str:
        return f"{self.backend.fingerprint()}|partition {self.partition} of {self.partitions}"


def split(state: StreamingSource) -> tuple[StreamingSource, ...]:
    """Returns the partitions of a partitioned stream as streams of their own, each where the stream has it."""
    h, n, count = state.backend, contract.num_records(state), state.partitions
    total = None if state.offset is not None else int(state.epoch) * n + int(state.index)
    parts = []
    for c in range(count):
        part = make_streaming(_Partition(h.backend, c, count), shuffle=state.shuffle, seed=int(state.seed),
                              name=f"{state.name} (partition {c} of {count})", num_epochs=state.num_epochs,
                              prefetch=h.prefetch, num_workers=max(1, h.num_workers // count))
        if total is None:  # a stream that filters or expands: each partition has its own position
            epoch, index, offset = positions(state)[c]
            part = tracing.replace(part, offset=np.asarray(offset, np.int32),
                                   served=np.asarray(int(state.served) // count, np.int32))
        else:
            epoch, index = partition_position(total, count, part.backend.backend.length)
        parts.append(tracing.replace(part, epoch=np.asarray(epoch, np.int32), index=np.asarray(index, np.int32)))
    return tuple(parts)


def partitions_of(state: Any) -> int:
    """Returns the canonical partitions a stream is defined over: 1 for unpartitioned streams and other sources.

    An eager source's ``partitions`` lay its records out over devices; packing and mixing
    refuse them on their own terms.
    """
    if isinstance(state, Partitioned):
        return len(state.parts)
    return state.partitions if isinstance(state, StreamingSource) else 1


def by_partition(sources: Sequence[Any], build: Callable[[int, int, list], Any], where: str) -> Partitioned | None:
    """Returns ``Partitioned(build(c, C, [partition c of each source]) for each c)``, or None when no source is partitioned."""
    counts = [partitions_of(s) for s in sources]
    if max(counts) == 1:
        return None
    for k, s in enumerate(sources):
        if counts[k] == 1:
            raise TypeError(
                f"{where}: source {k} ({type(s).__name__}, partitions={getattr(s, 'partitions', 1)}) cannot be split "
                f"into the canonical partitions the other sources are composed over. Compose partitioned streams only: "
                f"build every source with dfn.from_hf(..., streaming=True, partitions={max(counts)}) (or from_tfds / "
                "from_backend)."
            )
    if len(set(counts)) > 1:
        raise ValueError(
            f"{where}: the sources have partitions={counts}; composing partition by partition needs the same number "
            f"for all. Build every source with partitions={max(counts)}."
        )
    count = counts[0]
    splits = [s.parts if isinstance(s, Partitioned) else split(s) for s in sources]
    return Partitioned(parts=tuple(build(c, count, [parts[c] for parts in splits]) for c in range(count)))


# ----------------------------------------------------------------------------- batches


def _check_host(state: Partitioned, fn: str) -> None:
    if any(tracing.is_traced(x) for x in jax.tree.leaves(state)):
        raise TypeError(f"{fn}: a partitioned stream reads on the host and cannot run under jax.jit / scan. Call "
                        "dfn.get_batch outside jit and pass the batch into your jitted step.")


def _concat(batches: list[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *batches)


def _take(state: Partitioned, size: int, parts: Sequence[int], where: str) -> tuple[list, PyTree]:
    per = check_batch_size(size, len(state.parts), where)
    new, batches = list(state.parts), []
    for c in parts:
        new[c], batch = contract.get_batch(state.parts[c], per)
        batches.append(batch)
    return new, _concat(batches)


@contract.get_batch.register
def _(state: Partitioned, size: int, key: Any = None):
    _check_host(state, "get_batch")
    size = checks.check_size(size)
    if key is not None:
        raise TypeError("get_batch: a partitioned stream cannot draw random rows with key=; it serves rows in order.")
    parts, batch = _take(state, size, range(len(state.parts)), "get_batch")
    return Partitioned(parts=tuple(parts)), batch


def _exchange(parts: list, owned: range) -> list:
    """Returns ``parts`` with each part another process read restored from the cursor it sent."""
    for sent in gather_json({str(c): contract.cursor(parts[c]) for c in owned}):
        for c, cursor in sent.items():
            if int(c) not in owned:
                parts[int(c)] = contract.restore_cursor(parts[int(c)], cursor)
    return parts


@contract.get_global_batch.register
def _(state: Partitioned, global_size: int, sharding: jax.sharding.Sharding):
    # Each process reads the parts of its rows, then learns where the others' parts went.
    _check_host(state, "get_global_batch")
    size = checks.check_size(global_size, "get_global_batch")
    start, stop = process_rows(sharding, size)
    owned = owned_partitions(start, stop, size, len(state.parts), "get_global_batch (a partitioned stream)")
    parts, local = _take(state, size, owned, "get_global_batch")
    if jax.process_count() > 1:
        parts = _exchange(parts, owned)
    batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x, (size, *x.shape[1:])), local)
    return Partitioned(parts=tuple(parts)), batch


@contract.get_batch_at.register
def _(state: Partitioned, start: Any, size: int, key: Any = None):
    raise TypeError("get_batch_at: a partitioned stream has no random access; use dfn.get_batch.")


@contract.element_spec.register
def _(state: Partitioned):
    return contract.element_spec(state.parts[0])


@contract.num_records.register
def _(state: Partitioned):
    # Known when every part has the same length: the records of one epoch of every part.
    counts = {contract.num_records(p) for p in state.parts}
    n = counts.pop() if len(counts) == 1 else None
    return None if n is None else n * len(state.parts)


@contract.iterate.register
def _(state: Partitioned, size: int, *, epochs: int = 1):
    # The parts walk in step, size // C rows each, until the first of them stops.
    _check_host(state, "iterate")
    per = check_batch_size(checks.check_size(size, "iterate"), len(state.parts), "iterate")
    walks = [contract.iterate(p, per, epochs=epochs) for p in state.parts]

    def walk():
        for steps in zip(*walks):
            yield Partitioned(parts=tuple(s for s, _ in steps)), _concat([b for _, b in steps])

    return walk()


@contract.dataset_info.register
def _(state: Partitioned):
    return contract.dataset_info(state.parts[0])


# ----------------------------------------------------------------------------- cursor


@contract.cursor.register
def _(state: Partitioned):
    return cursors.make_cursor("partitioned", 0, 0, 0, parts=[contract.cursor(p) for p in state.parts])


@contract.restore_cursor.register
def _(state: Partitioned, cursor: dict[str, Any]):
    cursors.check_cursor(cursor, "partitioned", {}, None)
    saved = cursor.get("parts")
    got = f"{len(saved)} parts" if isinstance(saved, list) else type(saved).__name__
    parts = restore_each(
        state.parts, saved,
        f"restore_cursor: this state is composed over {len(state.parts)} partitions, and its cursor holds one cursor "
        f"per partition under 'parts'; got {got}. Rebuild the sources with the partitions= of the saved run.",
        lambda c: f"partition {c} of {len(state.parts)}")
    return Partitioned(parts=tuple(parts))


__all__ = ["Partitioned", "by_partition", "partitions_of", "split"]
