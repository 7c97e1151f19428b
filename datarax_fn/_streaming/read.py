"""Reading a stream state's next records: the cached reader and the rules that move a position.

Three rules place a stream (see ``source`` for the state): one partition counts records from
the start of its epoch; ``C > 1`` partitions of a stream that keeps the row count derive every
partition's position from the global count (``_layout.partitions``); a stream that filters or
expands keeps each partition's ``(epoch, index, offset)`` (chunk start, records of it served),
gathered across processes by :func:`gather_positions`. The reader in the state's static handle
only caches work: it is reused when it has reached exactly the state's position.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .._layout.exchange import gather_json
from .._layout.partitions import (
    check_batch_size,
    partition_offsets,
    partition_position,
    partition_seed,
)
from .._state import checks, contract, tracing
from .prefetch import StreamClosed
from .reader import Reader, rows

PyTree = Any
Stream = Any  # a ``source.StreamingSource`` (that module imports this one)


class EndOfStream(Exception):
    """Raised by ``get_batch`` on a ``StreamingSource`` whose ``num_epochs`` are used up.

    A plain ``Exception``, not a ``StopIteration``: raised inside a generator, a
    ``StopIteration`` would become a ``RuntimeError`` (PEP 479).
    """


def with_position(state: Stream, epoch: int, index: int) -> Stream:
    # Per-batch hot path on the host thread that competes with the prefetch thread for the
    # GIL. The cursor of a host-side source stays in host memory (0-d NumPy int32): a
    # device_put per scalar costs ~0.1 ms in JAX's dispatch, and nothing reads it on device.
    if epoch > checks.INT32_MAX or index > checks.INT32_MAX:
        raise ValueError(f"{state.name}: epoch/index passed 2**31 - 1; start a new state with a new seed.")
    return tracing.replace(state, epoch=np.asarray(epoch, np.int32), index=np.asarray(index, np.int32))


def with_positions(state: Stream, pos: list[tuple[int, int, int]], served: int) -> Stream:
    # The state of a stream that filters or expands at every partition's (epoch, index, offset),
    # having served `served` records since it began.
    arr = np.asarray(pos, np.int64).reshape(-1, 3)
    if max(arr.max(), served) > checks.INT32_MAX:
        raise ValueError(f"{state.name}: epoch/index/offset/served passed 2**31 - 1; start a new state with a new "
                         "seed.")
    e, i, o = (np.asarray(arr[:, k] if state.partitions > 1 else arr[0, k], np.int32) for k in range(3))
    return tracing.replace(state, epoch=e, index=i, offset=o, served=np.asarray(served, np.int32))


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


def _at(state: Stream, parts: tuple[int, ...]) -> tuple:
    """Returns what identifies a reader of ``parts`` at ``state``'s position."""
    if state.offset is None:
        return parts, int(state.epoch), int(state.index), int(state.seed), state.num_epochs
    pos = positions(state)
    return parts, tuple(pos[c] for c in parts), int(state.seed), state.num_epochs


def positions(state: Stream) -> list[tuple[int, int, int]]:
    """Returns every partition's ``(epoch, index, offset)`` of a stream that filters or expands."""
    e, i, o = (np.broadcast_to(x, (state.partitions,)).tolist() for x in (state.epoch, state.index, state.offset))
    return list(zip(e, i, o))


def _reader(state: Stream, parts: tuple[int, ...], starts: dict[int, tuple[int, int, int]],
            lengths: dict[int, int | None]) -> Reader:
    # The reader only caches work: reused when it has reached exactly this state's position
    # (for these partitions), reopened otherwise. Called under the handle's lock.
    h = state.backend
    at = _at(state, parts)
    if h.reader is None or h.reader.at != at:
        if h.reader is not None:
            h.reader.close()
        closes = h.closes
        seeds = {c: partition_seed(int(state.seed), c, state.partitions) for c in parts}
        h.reader = Reader(h.backend, state.partitions, seeds, starts, lengths, state.num_epochs, h.prefetch,
                          state.name, h.num_workers)
        h.reader.at = at
        if h.closes != closes:  # close() ran on another thread before it could see this reader
            h.reader.close()
            raise StreamClosed(f"{state.name}: the stream was closed while a read started")
    return h.reader


def _read_whole(state: Stream, size: int) -> tuple[int, int, list[PyTree]]:
    # One partition: the backend's own epochs, of a length it may not know.
    epoch, index = int(state.epoch), int(state.index)
    reader = _reader(state, (0,), {0: (epoch, index, 0)}, {0: None})
    parts = reader.take(0, size)
    got = sum(rows(p) for p in parts)
    if got < size:
        raise EndOfStream(
            f"{state.name}: the stream ended after num_epochs={state.num_epochs}; "
            f"{got} of {size} records were left and dropped (no short batch)."
        )
    epoch, index, offset = reader.pos[0]
    last = state.num_epochs is not None and epoch + 1 >= state.num_epochs
    if not last and reader.skip_epoch_end(0):
        # Normalise "end of epoch e" to "start of epoch e+1": a saved cursor never replays e.
        epoch, index, offset = reader.pos[0]
    return epoch, index + offset, parts


def _read_partitions(state: Stream, size: int, parts: tuple[int, ...]) -> tuple[int, int, list[PyTree]]:
    # Every partition gives size // C records from its own position, a function of the global
    # count alone, so any process computes the same positions without reading the others.
    n, c_all = contract.num_records(state), state.partitions
    per = check_batch_size(size, c_all, state.name)
    lengths = np.diff(partition_offsets(n, c_all)).tolist()
    total = int(state.epoch) * n + int(state.index)
    if state.num_epochs is not None:
        # Decided from the cursor, not from what this process reads, so every process ends together.
        left = state.num_epochs * min(lengths) - total // c_all
        if left < per:
            raise EndOfStream(
                f"{state.name}: the stream ended after num_epochs={state.num_epochs}: the shortest partition has "
                f"{max(left, 0)} records left and a batch of {size} takes {per} from each of the "
                f"{c_all} partitions (no short batch)."
            )
    starts = {c: (*partition_position(total, c_all, lengths[c]), 0) for c in parts}
    reader = _reader(state, parts, starts, {c: lengths[c] for c in parts})
    out = []
    for c in parts:
        taken = reader.take(c, per)
        if sum(rows(p) for p in taken) < per:
            raise ValueError(f"{state.name}: partition {c} of {c_all} ended before its num_epochs.")
        out += taken
    epoch, index = divmod(total + size, n)
    return epoch, index, out


def _read_chunked(state: Stream, size: int,
                  parts: tuple[int, ...]) -> tuple[list[tuple[int, int, int]], bool, list[PyTree]]:
    # A stream that filters or expands: every partition reads size // C records from its own
    # (epoch, index, offset). Returns every partition's new position (others' unchanged),
    # whether a partition ended before its share, and the records.
    c_all = state.partitions
    per = check_batch_size(size, c_all, state.name) if c_all > 1 else size
    n = state.backend.backend.num_records()
    lengths = [None] if c_all == 1 else np.diff(partition_offsets(n, c_all)).tolist()
    pos = positions(state)
    reader = _reader(state, parts, {c: pos[c] for c in parts}, {c: lengths[c] for c in parts})
    out, ended = [], False
    for c in parts:
        taken = reader.take(c, per)
        ended = ended or sum(rows(p) for p in taken) < per
        out += taken
        if not ended and (state.num_epochs is None or reader.pos[c][0] + 1 < state.num_epochs):
            reader.skip_epoch_end(c)  # "end of epoch e" is "start of epoch e+1", as for any stream
        pos[c] = reader.pos[c]
    return pos, ended, out


def _end_of_chunked(state: Stream, size: int) -> EndOfStream:
    where = "a partition" if state.partitions > 1 else "the stream"
    return EndOfStream(
        f"{state.name}: the stream ended after num_epochs={state.num_epochs}: {where} had fewer than the "
        f"{size // state.partitions} records a batch of {size} takes from it (no short batch)."
    )


def read(state: Stream, size: int, parts: tuple[int, ...],
          gather: Any = None) -> tuple[Stream, PyTree]:
    # Returns the state moved on by `size` records and the rows of partitions `parts`.
    # `gather(positions, ended)`: the positions of every partition and whether any ended, from
    # those this process read (a stream that filters or expands, read by several processes).
    h = state.backend
    spec = h.spec()
    with h.lock:
        try:
            if state.offset is not None:
                pos, ended, out = _read_chunked(state, size, parts)
                if gather is not None:
                    pos, ended = gather(pos, parts, ended)
                if ended:
                    raise _end_of_chunked(state, size)
                new = with_positions(state, pos, int(state.served) + size)
            else:
                if state.partitions == 1:
                    epoch, index, out = _read_whole(state, size)
                else:
                    epoch, index, out = _read_partitions(state, size, parts)
                new = with_position(state, epoch, index)
            _check_shapes(out, spec, state.name)
            h.reader.at = _at(new, parts)
        except BaseException:
            if h.reader is not None:
                h.reader.close()
                h.reader = None
            raise
    return new, _concat(out)


def gather_positions(pos: list[tuple[int, int, int]], parts: tuple[int, ...],
                      ended: bool) -> tuple[list[tuple[int, int, int]], bool]:
    # Every process reads only its partitions of a stream that filters or expands, whose positions
    # no process can compute for another: one all-gather per step keeps every state identical.
    merged, any_ended = list(pos), False
    for sent in gather_json({"pos": {str(c): list(pos[c]) for c in parts}, "ended": bool(ended)}):
        for c, p in sent["pos"].items():
            merged[int(c)] = tuple(int(x) for x in p)
        any_ended |= sent["ended"]
    return merged, any_ended


__all__ = ["EndOfStream", "gather_positions", "positions", "read", "with_position", "with_positions"]
