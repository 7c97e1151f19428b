"""The generic functions every source state implements.

Each is a ``functools.singledispatch`` on the state's type: ``EagerSource`` registers
its implementation in ``_eager.py``, ``StreamingSource`` in ``_streaming.py``. A new
state type plugs in with ``@dfn.get_batch.register(MyState)``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

PyTree = Any

_INT32_MAX = 2**31 - 1


def _unsupported(fn_name: str, state: Any) -> TypeError:
    return TypeError(
        f"{fn_name}: expected a datarax_fn source state (EagerSource, StreamingSource, ...); "
        f"got {type(state).__name__}. Build one with dfn.from_arrays, dfn.from_hf or dfn.from_tfds."
    )


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def replace(state: Any, **changes: Any) -> Any:
    """Returns a copy of an ``eqx.Module`` state with ``changes``, skipping ``__init__``.

    ``dataclasses.replace`` re-runs ``__init__`` and its validation; this is on every
    state's per-step hot path, and a state built from a valid one stays valid.
    """
    new = object.__new__(type(state))
    for name in _field_names(type(state)):
        object.__setattr__(new, name, changes[name] if name in changes else getattr(state, name))
    return new


def check_size(size: Any, fn_name: str = "get_batch") -> int:
    """Returns ``size`` if it is a static Python int in ``[1, 2**31 - 1]``, else raises."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(
            f"{fn_name}: size must be a static Python int (it fixes the batch shape); got "
            f"{type(size).__name__} {size!r}. Pass int(size); for a traced start position use "
            "dfn.get_batch_at(state, start, size)."
        )
    if not 1 <= size <= _INT32_MAX:
        raise ValueError(f"{fn_name}: size must be in [1, 2**31 - 1]; got size={size}.")
    return size


@functools.singledispatch
def get_batch(state: Any, size: int, key: Any = None) -> tuple[Any, PyTree]:
    """Returns ``(new_state, batch)``: the next ``size`` records of the state's stream.

    Without ``key`` the stream advances: ``index`` and ``epoch`` of the new state move
    on by ``size`` records, and batches straddle epoch boundaries (there is no short
    last batch). With a ``jax.random`` ``key``, returns ``size`` distinct records drawn
    by that key and the state unchanged.

    ```python
    import numpy as np, datarax_fn as dfn
    state = dfn.from_arrays({"x": np.arange(10)})
    state, batch = dfn.get_batch(state, 4)
    assert batch["x"].tolist() == [0, 1, 2, 3]
    ```
    """
    raise _unsupported("get_batch", state)


@functools.singledispatch
def get_batch_at(state: Any, start: Any, size: int, key: Any = None) -> PyTree:
    """Returns the records at stream positions ``start .. start + size - 1``.

    Positions count from the first record of epoch ``state.epoch``; ``start`` may be a
    traced integer. Pure: the state is not advanced.
    """
    raise _unsupported("get_batch_at", state)


@functools.singledispatch
def element_spec(state: Any) -> PyTree:
    """Returns a PyTree of ``jax.ShapeDtypeStruct``, one per leaf, for a single record."""
    raise _unsupported("element_spec", state)


@functools.singledispatch
def num_records(state: Any) -> int:
    """Returns the number of records in one epoch (also ``len(state)``)."""
    raise _unsupported("num_records", state)


@functools.singledispatch
def iterate(state: Any, size: int, *, epochs: int = 1) -> Iterator[tuple[Any, PyTree]]:
    """Yields ``(state, batch)`` pairs on the host, for plain Python loops.

    Walks ``epochs * num_records(state)`` records from the state's position in
    ``ceil(epochs * N / size)`` batches of ``size``; the last batch straddles into the
    next epoch instead of being dropped or short. Each yielded state is the one after
    its batch, ready to checkpoint.
    """
    raise _unsupported("iterate", state)


@functools.singledispatch
def cursor(state: Any) -> dict[str, Any]:
    """Returns the state's position as a small JSON-able dict (no data)."""
    raise _unsupported("cursor", state)


@functools.singledispatch
def restore_cursor(state: Any, cursor: dict[str, Any]) -> Any:
    """Returns ``state`` moved to a saved ``cursor``; raises if the data differ."""
    raise _unsupported("restore_cursor", state)


@functools.singledispatch
def dataset_info(state: Any) -> Any:
    """Returns the backend's metadata (HF ``DatasetInfo``, TFDS ``DatasetInfo``) or None."""
    raise _unsupported("dataset_info", state)


def iterate_batches(state: Any, size: int, epochs: int) -> Iterator[tuple[Any, PyTree]]:
    """The shared host loop behind ``iterate`` for states with a known length."""
    check_size(size, "iterate")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"iterate: epochs must be a Python int >= 1; got epochs={epochs!r}.")
    steps = -(-epochs * num_records(state) // size)
    for _ in range(steps):
        state, batch = get_batch(state, size)
        yield state, batch
