"""The generic functions every source state implements, and the contract they keep.

A *state* is an immutable ``equinox.Module`` (a PyTree) that subclasses
:class:`Source`. ``EagerSource``, ``StreamingSource`` and ``Pipeline`` are states; a
new one plugs in by subclassing ``dfn.Source`` and registering its implementations,
``@dfn.get_batch.register(MyState)``. Every state keeps this contract:

1. **Stream.** Epoch ``e`` visits every record once, in an order fixed by
   ``(seed, e)`` (the identity without shuffling). ``get_batch(state, size)`` returns
   the next ``size`` records of that stream and a new state; batches straddle epoch
   boundaries (no short last batch). The output depends on the state alone: an old
   state replays the same batches.
2. **Cursor.** The leaves ``index`` (records consumed in the current epoch, in
   ``[0, N)``), ``epoch`` and ``seed`` are the whole position; everything else that
   shapes the stream (the data's fingerprint, ``shuffle``, a pipeline's stages and
   batch size) is static.
3. **Length.** ``num_records(state)`` returns the records per epoch, or ``None`` when
   the backend cannot know it (a stream without split metadata). ``len(state)``
   returns the same int, and raises ``TypeError`` for an unknown length; ``bool(state)``
   is always True (a state is never "empty": an empty split cannot be built).
4. **Checkpoints.** ``cursor(state)`` returns a small JSON dict ``{"version": 1,
   "kind", "index", "epoch", "seed", ...}`` without touching the data (the fingerprint
   is computed once, when the state is built). ``restore_cursor(state, cursor)``
   returns ``state`` at the cursor's position, and raises ``ValueError`` naming every
   field that differs when the cursor was saved on another stream: other data, seed,
   shuffle, stages or batch size. A cursor of another version is refused.
5. **Equality.** Static metadata compares by a stable key (name plus fingerprint), so
   a state rebuilt from the same data has the same tree structure: a jitted step does
   not recompile, and ``jax.tree.map(f, a, b)`` works across the two.
6. **Errors.** A wrong type is a ``TypeError``, a wrong value a ``ValueError``; both
   name the argument, the value and a fix. Inside ``jit`` the checks that need values
   go through ``eqx.error_if``.

Over 400 lines because each generic function carries the docstring and runnable example
that the API pages render; the contract above and the functions that keep it read together.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .checks import check_epochs, check_size

PyTree = Any


class Source(eqx.Module):
    """Base class of every source state: an immutable PyTree with a cursor.

    Subclasses hold their cursor as leaves named ``index``, ``epoch`` and ``seed``,
    their configuration in static fields, and register the generic functions
    (``dfn.get_batch``, ``dfn.num_records``, ``dfn.element_spec``, ``dfn.cursor``,
    ``dfn.restore_cursor``; optionally ``dfn.get_batch_at``, ``dfn.iterate`` and
    ``dfn.dataset_info``). ``dfn.jit_step`` donates every argument holding one.

    ```python
    import equinox as eqx, jax, jax.numpy as jnp, datarax_fn as dfn

    class Counter(dfn.Source):
        index: jax.Array
        epoch: jax.Array
        seed: jax.Array
        n: int = eqx.field(static=True)

    @dfn.get_batch.register(Counter)
    def _(state, size, key=None):
        end = state.index + size
        new = Counter(end % state.n, state.epoch + end // state.n, state.seed, state.n)
        return new, {"x": (state.index + jnp.arange(size)) % state.n}

    @dfn.num_records.register(Counter)
    def _(state):
        return state.n

    state = Counter(jnp.int32(0), jnp.int32(0), jnp.uint32(0), 10)
    state, batch = dfn.get_batch(state, 3)
    assert batch["x"].tolist() == [0, 1, 2] and len(state) == 10 and bool(state)
    ```
    """

    def __len__(self) -> int:
        n = num_records(self)
        if n is None:
            raise TypeError(
                f"len({type(self).__name__}): the stream's length is unknown (its backend has no "
                "record count). Use dfn.num_records(state), which returns None here, or count the "
                "records once and load eagerly."
            )
        return n

    def __bool__(self) -> bool:
        # A state is never empty (building one over an empty split raises); without this,
        # `if state:` would fall back to __len__ and raise for streams of unknown length.
        return True


class Static:
    """Holds a value in a static field of a state; compares and hashes by ``key``, a stable identity.

    JAX compares static fields when it compares tree structures (jit caches,
    ``jax.tree.map`` over two states). Two loads of the same data carry different objects
    (dataset metadata, a streaming backend and its reader) but the same key, so their
    states have the same structure (point 5 above). Subclasses add slots for what they
    carry besides ``value``.
    """

    __slots__ = ("value", "key")

    def __init__(self, value: Any, key: Any):
        self.value = value
        self.key = key

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Static({type(self.value).__name__}, key={self.key!r})"


def _unsupported(fn_name: str, state: Any) -> TypeError:
    if isinstance(state, Source):
        # A state, just not one that implements this function: say so instead of listing it.
        return TypeError(
            f"{fn_name}: {type(state).__name__} does not implement {fn_name}; a state type that registers "
            f"{fn_name} does: @dfn.{fn_name}.register({type(state).__name__})."
        )
    return TypeError(
        f"{fn_name}: expected a datarax_fn source state (EagerSource, StreamingSource, Pipeline or "
        f"a dfn.Source subclass that registers {fn_name}); got {type(state).__name__}. Build one "
        "with dfn.from_arrays, dfn.from_hf or dfn.from_tfds."
    )


@functools.singledispatch
def get_batch(state: Any, size: int, key: Any = None) -> tuple[Any, PyTree]:
    """Returns ``(new_state, batch)``: the next ``size`` records of the state's stream.

    Without ``key`` the stream advances: ``index`` and ``epoch`` of the new state move
    on by ``size`` records, and batches straddle epoch boundaries (there is no short
    last batch). With a ``jax.random`` ``key``, returns ``size`` distinct records drawn
    by that key and the state unchanged.

    Arguments:
        state: a source state.
        size: records per batch, a static Python int (it fixes the batch shape).
        key: optional ``jax.random`` key for keyed sampling (eager sources only).

    Returns:
        ``(new_state, batch)``; ``batch`` has the structure of ``element_spec(state)``
        with a leading axis of ``size``.

    ```python
    import numpy as np, datarax_fn as dfn
    state = dfn.from_arrays({"x": np.arange(10, dtype=np.int32)})
    state, batch = dfn.get_batch(state, 4)
    assert batch["x"].tolist() == [0, 1, 2, 3] and int(state.index) == 4
    ```
    """
    raise _unsupported("get_batch", state)


@functools.singledispatch
def get_batch_at(state: Any, start: Any, size: int, key: Any = None) -> PyTree:
    """Returns the batch of records at stream positions ``start .. start + size - 1``.

    Positions count from the first record of epoch ``state.epoch`` and run on into the
    following epochs; a negative ``start`` raises (``ValueError``, or through
    ``eqx.error_if`` under ``jit``). Pure: the state is not advanced.

    Arguments:
        state: a random-access source state (eager).
        start: the first position, a Python int or a traced integer.
        size: records per batch, a static Python int.
        key: optional ``jax.random`` key: the positions then index that key's permutation.

    Returns:
        the batch, as from ``get_batch``.

    ```python
    import numpy as np, datarax_fn as dfn
    state = dfn.from_arrays({"x": np.arange(10, dtype=np.int32)})
    assert dfn.get_batch_at(state, 8, 4)["x"].tolist() == [8, 9, 0, 1]
    ```
    """
    raise _unsupported("get_batch_at", state)


@functools.singledispatch
def get_global_batch(state: Any, global_size: int, sharding: Any) -> tuple[Any, PyTree]:
    """Returns ``(new_state, batch)``: the next ``global_size`` records as global ``jax.Array``s.

    ``batch`` leaves are laid out by ``sharding`` over the leading axis (e.g.
    ``dfn.data_sharding()``). With several processes (``jax.distributed``), each one
    reads only the rows its devices own; the result equals the single-process
    ``get_batch(state, global_size)``. Every process holds the same cursor. Call it on
    the host, outside ``jit``. A ``StreamingSource`` (and a partitioned eager state)
    reads whole partitions: across processes it needs ``partitions=`` a multiple of the
    process count, and ``global_size`` a multiple of ``partitions``.

    Arguments:
        state: a source state (the same cursor in every process).
        global_size: records in the global batch.
        sharding: how the batch's leading axis is laid out.

    Returns:
        ``(new_state, batch)``; the state moved on by ``global_size`` records.

    ```python
    import numpy as np, jax, datarax_fn as dfn
    from jax.sharding import NamedSharding, PartitionSpec as P
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    state = dfn.from_arrays({"x": np.arange(16, dtype=np.int32)})
    state, batch = dfn.get_global_batch(state, 8, NamedSharding(mesh, P("data")))
    assert batch["x"].tolist() == list(range(8))
    ```
    """
    raise _unsupported("get_global_batch", state)


@functools.singledispatch
def element_spec(state: Any) -> PyTree:
    """Returns a PyTree of ``jax.ShapeDtypeStruct``, one per leaf, for a single record.

    Arguments:
        state: a source state.

    Returns:
        the structure of one record, without reading any.
    """
    raise _unsupported("element_spec", state)


@functools.singledispatch
def num_records(state: Any) -> int | None:
    """Returns the number of records in one epoch, or None when it is unknown.

    Arguments:
        state: a source state.

    Returns:
        an int (also ``len(state)``), or ``None`` for a stream whose backend does not
        know its length (``len(state)`` raises ``TypeError`` then).

    ```python
    import numpy as np, datarax_fn as dfn
    assert dfn.num_records(dfn.from_arrays({"x": np.zeros(7, np.float32)})) == 7
    ```
    """
    raise _unsupported("num_records", state)


@functools.singledispatch
def iterate(state: Any, size: int | None = None, *, epochs: int = 1) -> Iterator[tuple[Any, PyTree]]:
    """Returns an iterator of ``(state, batch)`` pairs, for plain Python loops on the host.

    ``remainder`` says what happens at the end of an epoch, with one meaning for every
    state:

    - ``"straddle"`` (a source's default): walks ``epochs * num_records(state)``
      records from the state's position in ``ceil(epochs * N / size)`` batches of
      ``size``; the last batch straddles into the next epoch instead of being dropped
      or short. A stream of unknown length walks until ``epochs`` more epochs have
      started, or until it ends.
    - ``"drop"`` (a ``dfn.Pipeline``'s default): walks to the end of the current
      epoch, then ``epochs - 1`` whole epochs; each epoch's last ``N % size`` records
      are read and skipped, so every batch is full.
    - ``"pad"``: as ``"drop"``, but those records come as a full-size batch padded
      with zero rows, and every batch gets a bool ``"mask"`` of its valid rows, so an
      evaluation step compiles once.
    - ``"partial"``: as ``"drop"``, but those records come as one shorter batch.

    Each yielded state is the one after its batch, ready to checkpoint. On a
    ``dfn.Pipeline`` the batches are its stages' output and ``size`` defaults to its
    ``batch_size``. A new state type registers its ``"straddle"`` walk
    (``@dfn.iterate.register(MyState)``, taking ``(state, size, *, epochs)``); the
    other modes are built on ``get_batch`` and ``num_records`` for every state.

    Arguments:
        state: a source state or a ``dfn.Pipeline``.
        size: records per batch (a pipeline: None or its ``batch_size``).
        epochs: how many epochs to walk.
        remainder: ``"straddle"``, ``"drop"``, ``"pad"`` or ``"partial"``; None: the
            state's default.

    Returns:
        an iterator of ``(state_after_batch, batch)``.

    ```python
    import numpy as np, datarax_fn as dfn
    source = dfn.from_arrays({"x": np.arange(5, dtype=np.int32)})
    pairs = list(dfn.iterate(source, 2))
    assert [b["x"].tolist() for _, b in pairs] == [[0, 1], [2, 3], [4, 0]]
    padded = [b for _, b in dfn.iterate(source, 2, remainder="pad")]
    assert [b["x"].tolist() for b in padded] == [[0, 1], [2, 3], [4, 0]]
    assert [b["mask"].tolist() for b in padded] == [[True, True], [True, True], [True, False]]
    ```
    """
    raise _unsupported("iterate", state)


REMAINDERS = ("straddle", "drop", "pad", "partial")


@functools.singledispatch
def iterate_defaults(state: Any, size: int | None) -> tuple[int, str]:
    """Returns ``(size, remainder)`` that ``iterate`` uses when they are left out.

    A source needs an explicit ``size`` and straddles epochs; a ``dfn.Pipeline``
    registers its ``batch_size`` and ``"drop"``.
    """
    if size is None:
        raise TypeError(
            f"iterate: size is required for a {type(state).__name__} (records per batch); "
            "e.g. dfn.iterate(state, 32), or wrap it in dfn.Pipeline(state, stages, batch_size)."
        )
    return size, "straddle"


_iterate_straddling = iterate


@functools.wraps(_iterate_straddling)  # keeps .register / .registry / .dispatch of the generic
def iterate(state: Any, size: int | None = None, *, epochs: int = 1, remainder: str | None = None):
    if not isinstance(remainder, (str, type(None))) or (remainder is not None and remainder not in REMAINDERS):
        raise ValueError(f"iterate: remainder must be one of {REMAINDERS} or None; got {remainder!r}.")
    size, default = iterate_defaults(state, size)
    remainder = default if remainder is None else remainder
    if remainder == "straddle":
        return _iterate_straddling(state, size, epochs=epochs)
    size = check_size(size, "iterate")
    epochs = check_epochs(epochs)
    n = num_records(state)
    if n is None:
        raise ValueError(
            f"iterate(remainder={remainder!r}): the stream's length is unknown, so its epochs have no "
            "known last batch. Use remainder='straddle', which walks until the stream ends."
        )
    return _walk_epochs(state, size, epochs, remainder, n)


def _walk_epochs(state: Any, size: int, epochs: int, remainder: str, n: int) -> Iterator[tuple[Any, PyTree]]:
    for _ in range(epochs):
        full, rem = divmod(n - int(state.index), size)
        for _ in range(full):
            state, batch = get_batch(state, size)
            yield state, (with_mask(batch, size, size) if remainder == "pad" else batch)
        if not rem:
            continue
        state, batch = get_batch(state, rem)  # read even when dropped: the next epoch starts after it
        if remainder == "partial":
            yield state, batch
        elif remainder == "pad":
            yield state, with_mask(pad_rows(batch, size), rem, size)


def with_mask(batch: PyTree, valid: int, size: int) -> PyTree:
    """Returns ``batch`` with a bool ``"mask"`` entry: True on its first ``valid`` of ``size`` rows."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"iterate(remainder='pad') adds a 'mask' entry, so batches must be dicts; got {type(batch).__name__}."
        )
    if "mask" in batch:
        raise ValueError("iterate(remainder='pad'): the batch already has a 'mask' key; rename it (or use a stage).")
    # The mask lives where the batch does: on device for eager batches, on the host for streams.
    xp = jnp if any(isinstance(x, jax.Array) for x in jax.tree.leaves(batch)) else np
    return {**batch, "mask": xp.arange(size) < valid}


def pad_rows(batch: PyTree, size: int) -> PyTree:
    """Returns ``batch`` with zero rows appended to every leaf up to ``size`` rows."""

    def pad(x):
        xp = jnp if isinstance(x, jax.Array) else np
        x = xp.asarray(x)
        return xp.concatenate([x, xp.zeros((size - x.shape[0], *x.shape[1:]), x.dtype)])

    return jax.tree.map(pad, batch)


@functools.singledispatch
def cursor(state: Any) -> dict[str, Any]:
    """Returns the state's position as a small JSON-able dict, without reading the data.

    Arguments:
        state: a source state.

    Returns:
        ``{"version": 1, "kind", "index", "epoch", "seed", ...}`` plus what identifies
        the stream (fingerprint, shuffle; a pipeline adds its stages and batch size).

    ```python
    import json, numpy as np, datarax_fn as dfn
    x = np.arange(10, dtype=np.int32)
    state, _ = dfn.get_batch(dfn.from_arrays({"x": x}, seed=3), 4)
    saved = json.dumps(dfn.cursor(state))
    state = dfn.restore_cursor(dfn.from_arrays({"x": x}, seed=3), json.loads(saved))
    assert int(state.index) == 4
    ```
    """
    raise _unsupported("cursor", state)


@functools.singledispatch
def restore_cursor(state: Any, cursor: dict[str, Any]) -> Any:
    """Returns ``state`` moved to a saved ``cursor``.

    Arguments:
        state: a state built like the one the cursor was saved from.
        cursor: the dict from ``dfn.cursor``.

    Returns:
        the state at the cursor's position.

    Raises:
        ValueError: the cursor was saved on another stream (the message names every
            field that differs: data fingerprint, seed, shuffle, stages, batch size), is
            of another version, or is out of range.
    """
    raise _unsupported("restore_cursor", state)


@functools.singledispatch
def dataset_info(state: Any) -> Any:
    """Returns the backend's metadata (HF ``DatasetInfo``, TFDS ``DatasetInfo``), or None.

    Arguments:
        state: a source state.

    Returns:
        the metadata object the loader attached, or ``None``.
    """
    raise _unsupported("dataset_info", state)


def iterate_batches(state: Any, size: int, epochs: int) -> Iterator[tuple[Any, PyTree]]:
    """Returns the shared host loop behind ``iterate`` for states with a known length."""
    check_size(size, "iterate")
    epochs = check_epochs(epochs)
    steps = -(-epochs * num_records(state) // size)

    def walk(state):
        for _ in range(steps):
            state, batch = get_batch(state, size)
            yield state, batch

    return walk(state)
