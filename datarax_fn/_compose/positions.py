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


def leaves(state: Any) -> tuple:
    """Returns a hashable form of a source state's position (its leaves' values)."""
    return tuple(tuple(np.ravel(np.asarray(x)).tolist()) for x in jax.tree.leaves(state))


def _take(state: Any, size: int) -> tuple[Any, dict[str, np.ndarray] | None]:
    """Returns ``state`` after ``size`` records and the records, or ``(state, None)`` past the stream's end."""
    try:
        state, part = contract.get_batch(state, size)
    except EndOfStream:
        return state, None
    return state, {k: np.asarray(v) for k, v in part.items()}


class StateGrid:
    """The records read from a state of a source of unknown length on, and the states met every ``size``.

    ``marks`` holds ``(records from the first state, its leaves, state)``; the last is the state
    after every record held. Only caches work: any state it is asked about that it does not hold
    starts it afresh.
    """

    __slots__ = ("marks", "records")

    def __init__(self):
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

    def read(self, state: Any, skip: int, count: int, size: int) -> dict[str, np.ndarray]:
        """Returns up to ``count`` records from ``skip`` past ``state`` (fewer only at the stream's end),
        reading ``size`` records per call."""
        self._start(state)
        held = 0 if self.records is None else len(next(iter(self.records.values())))
        parts = [] if self.records is None else [self.records]
        while held - skip < count:
            after, part = _take(self.marks[-1][2], size)
            if part is None:
                if size == 1:
                    break
                size = max(1, size // 4)  # the end: read the records left in smaller batches
                continue
            parts.append(part)
            held += len(next(iter(part.values())))
            self.marks.append((held, leaves(after), after))
        if len(parts) > 1:
            parts = [{k: np.concatenate([p[k] for p in parts]) for k in parts[0]}]
        self.records = parts[0] if parts else None
        return {} if self.records is None or held <= skip else {k: v[skip:] for k, v in self.records.items()}

    def after(self, state: Any, skip: int, records: int, size: int) -> tuple[Any, int]:
        """Returns the place ``records`` past ``(state, skip)``: the last state met at or before it, and
        the records past that state."""
        self.read(state, skip, records, size)  # the states up to there (a consumer's cache may have read none)
        target = skip + records
        return next((s, target - at) for at, _, s in reversed(self.marks) if at <= target)
