"""A source's place in its stream: one number where its length is known, else states it returned.

A source of known length is moved on by counting records (:func:`moved`). One that filters or
expands (or of unknown length) can only be moved by reading: :class:`StateGrid` keeps the
records read from a state on and the states ``get_batch`` returned every ``read`` records, so a
place is ``(one of those states, records past it)``. Reading on from any of them steps on the
same grid of states, so the place is a pure function of the state a consumer started from.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .._state import checks, contract, tracing
from .._streaming.read import EndOfStream


def put_scalar(like: Any, value: int) -> Any:
    """Returns ``value`` as an int32 cursor leaf where ``like`` lives: an eager state's device, a stream's host."""
    arr = np.asarray(value, np.int32)
    return jax.device_put(arr, like.sharding) if isinstance(like, jax.Array) else arr


def position(state: Any) -> int:
    """Returns the records a state of known length has consumed since epoch 0: ``epoch * N + index``."""
    return int(state.epoch) * contract.num_records(state) + int(state.index)


def moved(state: Any, records: int) -> Any:
    """Returns an eager or streaming ``state`` moved on by ``records`` without reading them."""
    epoch, index = divmod(position(state) + records, contract.num_records(state))
    if epoch > checks.INT32_MAX:
        raise ValueError("the source's epoch counter passed 2**31 - 1; start from a fresh state with a new seed.")
    return tracing.replace(state, index=put_scalar(state.index, index), epoch=put_scalar(state.epoch, epoch))


def restore_each(states: Any, saved: Any, mismatch: str, label: Any) -> list:
    """Returns ``states`` restored from the list of cursors ``saved``, one each, as composed states keep them.

    ``mismatch`` is the error when ``saved`` is not a list of ``len(states)`` cursors; an error from
    a child's restore is re-raised with ``label(k)`` naming the child.
    """
    if not isinstance(saved, list) or len(saved) != len(states):
        raise ValueError(mismatch)
    out = []
    for k, (state, cursor) in enumerate(zip(states, saved)):
        try:
            out.append(contract.restore_cursor(state, cursor))
        except (TypeError, ValueError) as e:
            raise type(e)(f"restore_cursor: {label(k)}: {e}") from None
    return out


def leaves(state: Any) -> tuple:
    """Returns a hashable form of a source state's position (its leaves' values)."""
    return tuple(tuple(np.ravel(np.asarray(x)).tolist()) for x in jax.tree.leaves(state))


def _rows(records: dict[str, np.ndarray]) -> int:
    return len(next(iter(records.values())))


def _joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    if len(parts) > 1:
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return parts[0] if parts else None


def _read_on(state: Any, held: int, count: int, size: int, parts: list, met: Any = None) -> tuple[Any, int]:
    """Reads ``size`` records a call from ``state`` into ``parts`` until ``held`` reaches ``count`` or the
    stream ends; ``met(held, state)`` sees the state after each call. Returns the last state and ``held``."""
    while held < count:
        try:
            after, part = contract.get_batch(state, size)
        except EndOfStream:
            if size == 1:
                break
            size = max(1, size // 4)  # the end: read the records left in smaller batches
            continue
        state = after
        parts.append({k: np.asarray(v) for k, v in part.items()})
        held += _rows(parts[-1])
        if met is not None:
            met(held, state)
    return state, held


class Counted:
    """The records read ahead of a source of known length, whose place is ``epoch * N + index``.

    ``move(state, records)`` moves a state on without reading; a read takes ``size`` records a
    call. Only caches work.
    """

    __slots__ = ("buffer", "move", "size")

    def __init__(self, move: Any, size: int):
        self.move, self.size = move, size
        self.buffer: tuple[int, dict[str, np.ndarray] | None, Any] | None = None  # (first place, records, after)

    def where(self, state: Any, skip: int) -> int:
        return position(state)

    def read(self, state: Any, skip: int, count: int) -> dict[str, np.ndarray]:
        """Returns up to ``count`` records from ``state``'s place (fewer only at the stream's end)."""
        here = position(state)
        if self.buffer is None or not self.buffer[0] <= here <= self.buffer[0] + _rows(self.buffer[1]):
            self.buffer = (here, None, state)
        first, records, after = self.buffer
        parts = [] if records is None else [{k: v[here - first:] for k, v in records.items()}]
        after, _ = _read_on(after, 0 if records is None else _rows(parts[0]), count, self.size, parts)
        records = _joined(parts)
        self.buffer = (here, records, after) if records else None
        return records or {}

    def after(self, state: Any, skip: int, records: int) -> tuple[Any, int]:
        return self.move(state, records), 0


class StateGrid:
    """The records read from a state of a source of unknown length on, and the states met every ``size``.

    ``marks`` holds ``(records from the first state, its leaves, state)``; the last is the state
    after every record held. Only caches work: any state it is asked about that it does not hold
    starts it afresh.
    """

    __slots__ = ("marks", "records", "size")

    def __init__(self, size: int):
        self.size = size  # records a read takes: the states met lie this far apart
        self.marks: list[tuple[int, tuple, Any]] = []
        self.records: dict[str, np.ndarray] | None = None

    def _start(self, state: Any) -> None:
        """Makes ``state`` the first state held: drops what lies before it, or starts afresh from it."""
        here = leaves(state)
        base = next((at for at, key, _ in self.marks if key == here), None)
        if base is None:
            self.marks, self.records, base = [(0, here, state)], None, 0
        if base:  # consumers only move forward
            self.marks = [(at - base, key, s) for at, key, s in self.marks if at >= base]
            self.records = {k: v[base:] for k, v in self.records.items()}

    def where(self, state: Any, skip: int) -> tuple:
        return leaves(state), skip

    def read(self, state: Any, skip: int, count: int) -> dict[str, np.ndarray]:
        """Returns up to ``count`` records from ``skip`` past ``state`` (fewer only at the stream's end)."""
        self._start(state)
        parts = [] if self.records is None else [self.records]
        _, held = _read_on(self.marks[-1][2], 0 if self.records is None else _rows(self.records), skip + count,
                           self.size, parts, lambda held, after: self.marks.append((held, leaves(after), after)))
        self.records = _joined(parts)
        return {} if self.records is None or held <= skip else {k: v[skip:] for k, v in self.records.items()}

    def after(self, state: Any, skip: int, records: int) -> tuple[Any, int]:
        """Returns the place ``records`` past ``(state, skip)``: the last state met at or before it, and
        the records past that state."""
        self.read(state, skip, records)  # the states up to there (a cached group read none)
        target = skip + records
        return next((s, target - at) for at, _, s in reversed(self.marks) if at <= target)
