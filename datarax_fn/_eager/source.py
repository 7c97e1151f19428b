"""The eager source: the whole dataset as device arrays plus a three-integer cursor.

The stream: epoch ``e`` visits every record exactly once in order ``pi_e`` (the
identity, or the keyed bijection of ``_state.shuffle`` for ``(seed, e)``); ``get_batch``
walks ``pi_0, pi_1, ...`` back to back. Limits: ``N < 2**31`` records, ``size < 2**31``,
and ``epoch < 2**31`` (an overflow raises inside ``jit`` through ``eqx.error_if``).
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int, UInt32

from .._state import checks, contract, cursors, tracing
from .._state.jit import is_deleted, reused_donation, warn_if_copied
from .._layout import gather
from .._layout.placement import (
    Placement,
    check_on_boundary,
    check_single_device,
    make_placement,
    put,
    stored_records,
)
from .._layout.partitions import check_batch_size, check_partitions
from .._layout.ragged_rows import compact_fields, is_ragged
from .._state.shuffle import permute
from .arrays import check_arrays, hash_arrays, leaf_paths

PyTree = Any


class EagerSource(contract.Source):
    """An in-memory source: ``data`` arrays plus the ``index``/``epoch``/``seed`` cursor.

    Immutable; every function returns a new state. Build one with ``dfn.from_arrays``,
    ``dfn.from_hf`` or ``dfn.from_tfds``. ``fingerprint`` (static) identifies the data:
    two sources over equal data have equal tree structures, so a jitted step compiled
    for one runs the other without recompiling.
    """

    data: PyTree
    index: Int[Array, ""]
    epoch: Int[Array, ""]
    seed: UInt32[Array, ""]
    num_records: int = eqx.field(static=True)
    shuffle: bool = eqx.field(static=True, default=False)
    name: str = eqx.field(static=True, default="arrays")
    info: contract.Static | None = eqx.field(static=True, default=None)
    fingerprint: str = eqx.field(static=True, default="")
    partitions: int = eqx.field(static=True, default=1)
    placement: Placement = eqx.field(static=True, default=Placement())
    partition_seeds: UInt32[Array, " partitions"] | None = None

    def __check_init__(self):
        leaves = leaf_paths(self.data)
        if not leaves:
            raise ValueError("EagerSource: data has no array leaves; pass a dict of arrays.")
        bad = [p for p, x in leaves if not (hasattr(x, "shape") and hasattr(x, "dtype"))]
        if bad:
            raise TypeError(
                f"EagerSource: every data leaf must be an array; non-array leaves: {', '.join(bad)}. "
                "Convert them with np.asarray, or drop them."
            )
        scalar = [p for p, x in leaves if len(x.shape) == 0]
        if scalar:
            raise ValueError(f"EagerSource: data leaves need a leading record axis; scalars at {', '.join(scalar)}.")
        lengths = {p: x.shape[0] for p, x in leaves}
        shown = ", ".join(f"{p}: {k}" for p, k in lengths.items())
        rows = stored_records(self.num_records, self.partitions, self.placement)
        if len(set(lengths.values())) != 1 or next(iter(lengths.values())) != rows:
            raise ValueError(
                f"EagerSource: every data leaf must share the leading axis N={self.num_records}{_held(self)}; "
                f"got leading sizes {shown}."
            )
        if not 1 <= self.num_records <= checks.INT32_MAX:
            raise ValueError(
                f"EagerSource: num_records must be in [1, 2**31 - 1]; got N={self.num_records} "
                f"(leading sizes {shown}). An empty split cannot be iterated."
            )


def _held(state: EagerSource) -> str:
    rows = stored_records(state.num_records, state.partitions, state.placement)
    return "" if rows == state.num_records else f" (its {state.partitions} partitions padded to {rows} rows)"


def check_data(state: EagerSource, where: str) -> EagerSource:
    """Returns ``state`` if its data leaves still hold the records it was built over; ValueError otherwise.

    Also refuses a state a donating jit consumed, naming the donation instead of JAX's
    "Array has been deleted".

    ``eqx.tree_at`` and ``dataclasses.replace`` swap leaves without running ``__check_init__``,
    so a state can carry new data under the old ``num_records`` and fingerprint: a longer
    dataset would be served only in part, a shorter one gathered out of range. Shapes are
    static, so this costs nothing inside ``jit`` and a few microseconds outside it.
    """
    # On the per-batch path: read the fields in one go (a getattr goes through equinox, ~1 us each).
    fields = object.__getattribute__(state, "__dict__")
    rows = fields["num_records"]
    if fields["placement"].kind == "partitioned":
        rows = stored_records(rows, fields["partitions"], fields["placement"])
    leaves = jax.tree.leaves(fields["data"], is_leaf=is_ragged)
    if leaves and all(getattr(x, "shape", ())[:1] == (rows,) for x in leaves):
        if is_deleted(fields["index"]):  # a donating jit deletes every leaf, the cursor's too
            raise reused_donation(where, "this state")
        return state
    shown = ", ".join(f"{p}: {np.shape(x)[0] if np.ndim(x) else 'scalar'}" for p, x in leaf_paths(state.data))
    raise ValueError(
        f"{where}: this state was built over N={state.num_records} records{_held(state)}, but its data now has "
        f"leading sizes {shown or 'no leaves'}. Its length, fingerprint and shuffle order belong to the data it "
        "was built with, and data swapped in with eqx.tree_at or dataclasses.replace keeps them. Build a new "
        f"state over the new data: dfn.from_arrays(new_data, shuffle={state.shuffle}, seed=<seed>)."
    )


def from_arrays(
    data: PyTree,
    *,
    shuffle: bool = False,
    seed: int = 0,
    name: str = "arrays",
    info: Any = None,
    copy: bool = True,
    fingerprint: str | None = None,
    partitions: int = 1,
    placement: str = "device",
    mesh: jax.sharding.Mesh | None = None,
) -> EagerSource:
    """Returns an ``EagerSource`` over a PyTree of arrays sharing a leading axis.

    Arrays move to their devices once; dtypes are kept exactly (an int64 leaf needs
    ``jax_enable_x64`` and otherwise raises rather than silently narrowing). The data's
    fingerprint (xxh3 of every leaf) is computed here, once.

    Arguments:
        data: a PyTree (usually a dict) of NumPy or JAX arrays with one leading length N.
        shuffle: visit each epoch in the keyed order of ``(seed, epoch)``.
        seed: an int in ``[0, 2**32)``.
        name: a label used in error messages and the cursor's stream key.
        info: backend metadata returned by ``dfn.dataset_info``.
        copy: ``False`` hands NumPy buffers to ``jax.device_put``, which on a CPU device
            aliases 64-byte-aligned buffers instead of copying them (half the peak memory
            of a load). Use it only for arrays nothing else holds: writing to such a buffer
            would change the state. XLA cannot donate memory it does not own, so on CPU
            the first donated ``jit_step`` copies such a dataset once into XLA memory.
        fingerprint: a string that identifies the data, for loaders that already have
            one (e.g. a digest of the files and options); default: xxh3 of the arrays.
        partitions: ``C``, the canonical partitions of the stream (see the guide on
            devices and hosts); batch sizes must be multiples of it. ``1`` is the plain stream.
        placement: where the data lives. ``"device"`` (default): once, committed to the
            default device. ``"replicated"``: on every device of ``mesh`` (memory x devices).
            ``"partitioned"``: each device of ``mesh`` holds ``partitions / devices`` whole
            partitions (memory / devices); needs ``partitions`` a multiple of the devices.
            ``"host"``: NumPy in host memory, batches gathered on the host (not under ``jit``).
            Every placement gives the same stream for the same ``partitions``; all but
            ``"device"`` return batches split over the mesh's first axis.
        mesh: the ``jax.sharding.Mesh`` of the placement; default: one axis ``"data"`` over
            every device.

    Returns:
        an ``EagerSource`` at epoch 0, index 0.

    ```python
    import numpy as np, datarax_fn as dfn
    state = dfn.from_arrays({"image": np.zeros((100, 8, 8, 1), np.uint8),
                             "label": np.arange(100, dtype=np.int32)}, shuffle=True, seed=1)
    assert len(state) == 100 and dfn.num_records(state) == 100

    spread = dfn.from_arrays({"x": np.arange(10, dtype=np.int32)}, partitions=2, placement="partitioned")
    spread, batch = dfn.get_batch(spread, 4)   # two records of each partition, partition-major
    assert batch["x"].tolist() == [0, 1, 5, 6]
    ```
    """
    seed = checks.check_seed(seed, "from_arrays")
    shuffle = checks.check_flag(shuffle, "shuffle", "from_arrays")
    copy = checks.check_flag(copy, "copy", "from_arrays")
    leaves = check_arrays(data, "from_arrays")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise TypeError(f"from_arrays: fingerprint must be a str or None; got {type(fingerprint).__name__}.")
    n = _first_length(leaves)
    partitions = check_partitions(partitions, max(n, 1), "from_arrays")
    where = make_placement(placement, mesh, partitions, "from_arrays")
    fingerprint = fingerprint or hash_arrays(data)
    if where.kind == "device" and partitions == 1:
        # Padded text (and lists) held flat: memory follows the data, not its longest row. The
        # batch gather pads each batch back inside jit, so batches (and the digest above) are
        # those of the padded arrays.
        data = compact_fields(data)
    data = put(data, where, n, partitions, copy)
    return placed_source(data, where, num_records=n, partitions=partitions, shuffle=shuffle, seed=seed,
                         name=str(name), info=info, fingerprint=fingerprint)


def placed_source(data: PyTree, placement: Placement, *, num_records: int, partitions: int,
                  shuffle: bool, seed: int, name: str, info: Any, fingerprint: str,
                  index: int = 0, epoch: int = 0) -> EagerSource:
    """Returns an ``EagerSource`` over ``data`` already laid out as ``placement`` stores it."""
    where = placement.replicated()

    def scalar(value, dtype):
        # device_put of NumPy scalars: no XLA compile on a cold start (jnp.zeros compiles one).
        return jax.device_put(np.asarray(value, dtype), where)

    seeds = None if partitions == 1 else jax.device_put(gather.partition_seeds(seed, partitions), where)
    return EagerSource(
        data=data,
        index=scalar(index, np.int32),
        epoch=scalar(epoch, np.int32),
        seed=scalar(seed, np.uint32),
        num_records=num_records,
        shuffle=bool(shuffle),
        name=name,
        info=None if info is None else contract.Static(info, f"{name}:{fingerprint}"),
        fingerprint=fingerprint,
        partitions=partitions,
        placement=placement,
        partition_seeds=seeds,
    )


def _first_length(leaves: list[tuple[str, Any]]) -> int:
    return leaves[0][1].shape[0] if leaves and leaves[0][1].ndim else 0


# ----------------------------------------------------------------------------- batches


def advance(state: EagerSource, size: int) -> EagerSource:
    """Returns ``state`` moved on by ``size`` records without reading them."""
    index, epoch = gather.advance_cursor(state.index, state.epoch, size=size, n=state.num_records)
    return tracing.replace(state, index=index, epoch=epoch)


@functools.partial(tracing.jit_unless_traced, static_argnames=("size", "n"))
def _keyed(data: PyTree, key: Any, start: Any, size: int, n: int) -> PyTree:
    words = jax.random.bits(key, (2,), jnp.uint32)
    pos = jnp.asarray(start).astype(jnp.uint32) + jnp.arange(size, dtype=jnp.uint32)
    return gather.take(data, permute(pos % jnp.uint32(n), n, words[0], words[1]), unique=size <= n)


# Compiled once per (batch size, N, shuffle, data structure); `data` is an input and
# never an output, so XLA cannot copy it (see _state/jit.py).
@functools.partial(tracing.jit_unless_traced, static_argnames=("size", "n", "shuffle"))
def _step(data, index, epoch, seed, size, n, shuffle):
    batch = gather.records_at(data, index, size=size, n=n, shuffle=shuffle, seed=seed, epoch=epoch)
    index, epoch = gather.advance_cursor(index, epoch, size=size, n=n)
    return index, epoch, batch


def _check_keyed(state: EagerSource, size: int) -> None:
    if size > state.num_records:
        raise ValueError(
            f"get_batch: with a key, size={size} distinct records cannot be drawn from N={state.num_records}. "
            "Use size <= N, or drop the key to stream across epochs."
        )
    if state.partitions > 1 or state.placement.kind in ("partitioned", "host"):
        raise ValueError(
            f"get_batch: a key draws from the whole dataset, which a state with partitions={state.partitions}, "
            f"placement={state.placement.kind!r} does not gather in one place. Drop the key, or build the state "
            "with partitions=1 and placement='device' or 'replicated'."
        )


def _placed(state: EagerSource, index: Any, size: int, where: str) -> tuple[Any, Any, PyTree]:
    """Returns ``(index, epoch, batch)`` after the batch of ``size`` at ``index`` of a placed or partitioned state."""
    check_batch_size(size, state.partitions, where)
    check_batch_size(size, state.placement.devices, where, state.placement.describe_devices())
    common = dict(size=size, num_records=state.num_records, partitions=state.partitions, shuffle=state.shuffle)
    if state.placement.kind == "host":
        if tracing.is_traced(index, state.epoch, state.seed):
            raise TypeError(
                f"{where}: placement='host' keeps the data in host memory and gathers batches with NumPy, outside "
                "jit. Call it outside jit, or re-place the state: dfn.place(state, 'partitioned') or 'replicated'."
            )
        batch = gather.host_batch(state.data, int(index), int(state.epoch), int(state.seed),
                                   sharding=state.placement.batch_sharding(), **common)
        return (*gather.advance_cursor(index, state.epoch, size=size, n=state.num_records), batch)
    if tracing.is_traced(index, state.epoch):
        warn_if_copied(state.data)
    return gather.placed_step(state.data, index, state.epoch, state.seed, state.partition_seeds,
                               placement=state.placement, **common)


@contract.get_batch.register
def _(state: EagerSource, size: int, key: Any = None):
    size = checks.check_size(size)
    check_data(state, "get_batch")
    n = state.num_records
    if key is not None:
        _check_keyed(state, size)
        return state, _keyed(state.data, key, 0, size=size, n=n)
    if state.placement.kind != "device" or state.partitions > 1:
        index, epoch, batch = _placed(state, state.index, size, "get_batch")
        return tracing.replace(state, index=index, epoch=epoch), batch
    if tracing.is_traced(state.index):
        check_single_device()
        warn_if_copied(state.data)
    index, epoch, batch = _step(state.data, state.index, state.epoch, state.seed, size=size, n=n, shuffle=state.shuffle)
    return tracing.replace(state, index=index, epoch=epoch), batch


@contract.get_batch_at.register
def _(state: EagerSource, start: Any, size: int, key: Any = None):
    size = checks.check_size(size, "get_batch_at")
    check_data(state, "get_batch_at")
    start = checks.check_start(start)
    n = state.num_records
    if key is not None:
        _check_keyed(state, size)
        return _keyed(state.data, key, start, size=size, n=n)
    if state.placement.kind != "device" or state.partitions > 1:
        return _placed(state, jnp.asarray(check_on_boundary(start, state.partitions)), size, "get_batch_at")[2]
    return gather.records_at(state.data, start, size=size, n=n, shuffle=state.shuffle, seed=state.seed, epoch=state.epoch)


@contract.element_spec.register
def _(state: EagerSource):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state.data, is_leaf=is_ragged)


@contract.num_records.register
def _(state: EagerSource):
    return check_data(state, "num_records").num_records


@contract.iterate.register
def _(state: EagerSource, size: int, *, epochs: int = 1):
    return contract.iterate_batches(state, size, epochs)


@contract.dataset_info.register
def _(state: EagerSource):
    return None if state.info is None else state.info.value


# ----------------------------------------------------------------------------- cursor


def data_fingerprint(state: EagerSource) -> str:
    """Returns the fingerprint of the state's data (computed when it was built)."""
    # Only a state built by calling EagerSource(...) directly lacks one.
    return state.fingerprint or hash_arrays(state.data)


def _stream_key(state: EagerSource) -> dict[str, Any]:
    # The placement is not part of the stream; the partitions are (make_cursor records them).
    return {"fingerprint": data_fingerprint(state), "num_records": state.num_records,
            "shuffle": state.shuffle, "seed": int(state.seed)}


@contract.cursor.register
def _(state: EagerSource):
    key = _stream_key(check_data(state, "cursor"))
    return cursors.make_cursor("eager", state.index, state.epoch, key.pop("seed"), state.partitions, **key)


@contract.restore_cursor.register
def _(state: EagerSource, cursor: dict[str, Any]):
    index, epoch = cursors.check_cursor(cursor, "eager", _stream_key(check_data(state, "restore_cursor")), state.num_records, state.partitions)
    where = state.placement.replicated()
    return tracing.replace(
        state,
        index=jax.device_put(np.asarray(index, np.int32), where),
        epoch=jax.device_put(np.asarray(epoch, np.int32), where),
    )


__all__ = ["EagerSource", "from_arrays", "advance", "hash_arrays", "data_fingerprint"]
