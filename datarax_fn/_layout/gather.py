"""The batch gather: which record each batch row reads, and gathering it where the data is placed.

The plain stream (one partition, data in file order) is ``records_at``: stream positions
to records (the keyed order of ``_state.shuffle``) and one gather; ``advance_cursor``
moves the ``(index, epoch)`` cursor on. Every placement below builds on them.

The rows of a batch follow the canonical-partition order of ``partitions``: row ``r`` of a
batch of ``B`` comes from partition ``c = r // (B // C)``, at that partition's position
``q + r % (B // C)`` with ``q = total // C``. ``rows_to_records`` computes it with NumPy
(the ``host`` placement, and the reference in tests) or with JAX inside ``jit``.

With a mesh, ``placed_batch`` runs the gather under ``jax.shard_map``: device ``d`` computes
the record ids of its own rows ``[d * B // D, (d + 1) * B // D)`` and gathers them from its
own shard of the data, so a step never moves the dataset and the batch comes out split over
the mesh's first axis with no collective.
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from .._state import tracing
from .partitions import partition_offsets, partition_seed
from .placement import Placement, padded_length
from .ragged_rows import is_ragged
from .._state.shuffle import permute, permute_with_keys, round_keys

PyTree = Any


def partition_seeds(seed: int, partitions: int) -> np.ndarray:
    """Returns the uint32 order seed of every partition (``partition_seed`` of each)."""
    return np.asarray([partition_seed(seed, c, partitions) for c in range(partitions)], np.uint32)


def rows_to_records(rows: Any, q: Any, per: int, num_records: int, partitions: int, seeds: Any,
                    shuffle: bool) -> tuple[Any, Any]:
    """Returns ``(partition, record in partition)`` of batch ``rows`` when partitions are at position ``q``.

    NumPy in (``rows`` an int64 array, ``q`` an int) gives NumPy out; JAX arrays give
    ``int32`` JAX arrays (``q`` then a uint32 below ``2**32 - per``).
    """
    xp = np if isinstance(rows, np.ndarray) and not tracing.is_traced(q, seeds) else jnp
    off = partition_offsets(num_records, partitions)
    lengths = np.diff(off)
    if xp is jnp:
        rows = rows.astype(jnp.uint32)
        q = jnp.asarray(q).astype(jnp.uint32)
    part = rows // per
    pos = q + rows % per
    out = None
    for n in sorted(set(lengths.tolist())):
        epoch, local = pos // n, pos % n
        rec = permute(local, n, seeds[part], epoch) if shuffle else local
        out = rec if out is None else xp.where(xp.asarray(lengths)[part] == n, rec, out)
    if xp is jnp:
        return part.astype(jnp.int32), out.astype(jnp.int32)
    return part, out


def consumed_per_partition(index: jax.Array, epoch: jax.Array, num_records: int, partitions: int, per: int) -> jax.Array:
    """Returns ``q = (epoch * N + index) // C``, the records every partition has consumed, as uint32.

    Raises (``eqx.error_if``) before ``q`` overflows. ``partitions.partition_position`` turns the
    same count into one partition's ``(epoch, position)`` on the host.
    """
    a, b = divmod(num_records, partitions)
    index = index.astype(jnp.uint32)
    epoch = epoch.astype(jnp.uint32)
    q = epoch * jnp.uint32(a) + (epoch * jnp.uint32(b) + index) // jnp.uint32(partitions)
    # Below this epoch, epoch * b + index and q + per stay under 2**32.
    limit = max(0, min((2**32 - per - 1) * partitions // num_records, (2**32 - num_records) // max(b, 1)) - 1)
    return eqx.error_if(
        q, epoch > jnp.uint32(min(limit, 2**32 - 1)),
        f"datarax_fn: with partitions={partitions} over N={num_records} records the stream passed epoch "
        f"{limit}, where per-partition positions overflow uint32. Restart from a fresh state with a new seed.",
    )


# ----------------------------------------------------------------------------- one partition
# The plain stream (partitions == 1, data in file order): positions to records, and the gather.


def positions_to_records(pos: jax.Array, n: int, shuffle: bool, seed: Any, epoch0: Any) -> jax.Array:
    """Returns the record ids of absolute stream positions (uint32, counted from epoch0's start) to record ids."""
    ep = epoch0.astype(jnp.uint32) + pos // jnp.uint32(n)
    local = pos % jnp.uint32(n)
    if not shuffle:
        return local.astype(jnp.int32)
    return permute(local, n, seed, ep)


def _take_leaf(x: jax.Array, idx: jax.Array, unique: bool) -> jax.Array:
    dnums = jax.lax.GatherDimensionNumbers(
        offset_dims=tuple(range(1, x.ndim)), collapsed_slice_dims=(0,), start_index_map=(0,)
    )
    return jax.lax.gather(
        x,
        idx[:, None],
        dimension_numbers=dnums,
        slice_sizes=(1, *x.shape[1:]),
        mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS,
        unique_indices=unique,
    )


def take(data: PyTree, idx: jax.Array, unique: bool = False) -> PyTree:
    """Returns the rows ``idx`` of every leaf of ``data``."""
    # Indices are in [0, N) by construction, so the gather skips jnp.take's bounds-fill select.
    return jax.tree.map(lambda x: x.take(idx) if is_ragged(x) else _take_leaf(x, idx, unique), data, is_leaf=is_ragged)


@functools.partial(tracing.jit_unless_traced, static_argnames=("size", "n", "shuffle"))
def records_at(data: PyTree, start: Any, size: int, n: int, shuffle: bool, seed: Any, epoch: Any) -> PyTree:
    """Returns the batch at stream positions ``start .. start + size - 1`` from epoch ``epoch``.

    Branch-free: a ``lax.cond`` between "inside one epoch" and "straddling" would
    materialise the batch and cost more than both paths together inside ``scan``.
    """
    start = jnp.asarray(start).astype(jnp.uint32)
    offsets = jnp.arange(size, dtype=jnp.uint32)
    if size > n:
        return take(data, positions_to_records(start + offsets, n, shuffle, seed, epoch))
    ep = epoch.astype(jnp.uint32) + start // jnp.uint32(n)
    local = start % jnp.uint32(n)
    if shuffle:
        # At most two epochs meet in one batch: positions past N belong to epoch ep + 1.
        pos = local + offsets
        wrapped = pos >= jnp.uint32(n)
        pos = jnp.where(wrapped, pos - jnp.uint32(n), pos)
        keys = [jnp.where(wrapped, k1, k0) for k0, k1 in zip(round_keys(seed, ep), round_keys(seed, ep + 1))]
        return take(data, permute_with_keys(pos, n, keys))
    # Sequential: slice [s0, s0 + size) with s0 = min(local, N - size), append the first
    # `size` records, and slice again at local - s0; rows past N wrap to the epoch start.
    local = local.astype(jnp.int32)
    s0 = jnp.minimum(local, n - size)

    def leaf(x):
        if is_ragged(x):  # held flat: gather the rows, local .. local + size - 1 wrapping at N
            rows = local + jnp.arange(size, dtype=jnp.int32)
            return x.take(jnp.where(rows >= n, rows - n, rows))
        both = jnp.concatenate([jax.lax.dynamic_slice_in_dim(x, s0, size), x[:size]])
        return jax.lax.dynamic_slice_in_dim(both, local - s0, size)

    return jax.tree.map(leaf, data, is_leaf=is_ragged)


@functools.partial(tracing.jit_unless_traced, static_argnames=("size", "n"))
def advance_cursor(index: jax.Array, epoch: jax.Array, size: int, n: int) -> tuple[jax.Array, jax.Array]:
    """Returns the cursor ``(index, epoch)`` moved on by ``size`` records of ``n`` per epoch (checked for overflow)."""
    total = index.astype(jnp.uint32) + jnp.uint32(size)
    new_index = (total % jnp.uint32(n)).astype(jnp.int32)
    new_epoch = epoch + (total // jnp.uint32(n)).astype(jnp.int32)
    new_epoch = eqx.error_if(
        new_epoch,
        new_epoch < epoch,
        "datarax_fn: the int32 epoch counter overflowed (more than 2**31 - 1 epochs). "
        "Restart from a fresh state with a new seed.",
    )
    return new_index, new_epoch


# ----------------------------------------------------------------------------- partitions and meshes


def _gather(data: PyTree, idx: jax.Array) -> PyTree:
    # Ids are in [0, rows held) by construction; "clip" costs a clamp, not the bounds-fill select.
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0, mode="clip"), data)


@functools.partial(
    tracing.jit_unless_traced,
    static_argnames=("size", "num_records", "partitions", "shuffle", "placement"),
)
def placed_batch(data: PyTree, index: jax.Array, epoch: jax.Array, seed: jax.Array, seeds: jax.Array | None, *,
                 size: int, num_records: int, partitions: int, shuffle: bool, placement: Placement) -> PyTree:
    """Returns the batch of ``size`` at the cursor, gathered where ``placement`` keeps the data.

    The one-partition kernel ``records_at`` serves ``partitions == 1`` outside ``partitioned``.
    ``seeds`` holds each partition's seed when ``partitions > 1``.
    """
    per = size // partitions
    index = jnp.asarray(index)
    seeds = seed[None] if seeds is None else seeds
    padded = placement.kind == "partitioned"
    length = padded_length(num_records, partitions)
    offsets = jnp.asarray(partition_offsets(num_records, partitions)[:-1].astype(np.int32))

    plain = partitions == 1 and not padded
    # Computed once, outside shard_map: its overflow check then needs no collective.
    q = jnp.uint32(0) if plain else consumed_per_partition(index, epoch, num_records, partitions, per)

    def rows_batch(data, index, epoch, seed, seeds, q, first_row, rows, first_partition):
        if plain:
            return records_at(data, index.astype(jnp.uint32) + first_row.astype(jnp.uint32), size=rows,
                              n=num_records, shuffle=shuffle, seed=seed, epoch=epoch)
        part, rec = rows_to_records(first_row + jnp.arange(rows, dtype=jnp.int32), q, per, num_records,
                                    partitions, seeds, shuffle)
        base = (part - first_partition) * length if padded else offsets[part]
        return _gather(data, base + rec)

    if placement.mesh is None:
        return rows_batch(data, index, epoch, seed, seeds, q, jnp.int32(0), size, 0)
    rows = size // placement.devices
    local_partitions = partitions // placement.devices

    def per_device(data, index, epoch, seed, seeds, q):
        d = jax.lax.axis_index(placement.axis)
        return rows_batch(data, index, epoch, seed, seeds, q, d * rows, rows, d * local_partitions)

    data_spec = PartitionSpec(placement.axis) if padded else PartitionSpec()
    return jax.shard_map(
        per_device, mesh=placement.mesh,
        in_specs=(data_spec, *[PartitionSpec()] * 5), out_specs=PartitionSpec(placement.axis), check_vma=False,
    )(data, index, epoch, seed, seeds, q)


@functools.partial(
    tracing.jit_unless_traced,
    static_argnames=("size", "num_records", "partitions", "shuffle", "placement"),
)
def placed_step(data: PyTree, index: jax.Array, epoch: jax.Array, seed: jax.Array, seeds: jax.Array | None, *,
                size: int, num_records: int, partitions: int, shuffle: bool,
                placement: Placement) -> tuple[jax.Array, jax.Array, PyTree]:
    """Returns ``(index, epoch, batch)``: ``placed_batch`` and the cursor moved on, in one program."""
    batch = placed_batch(data, index, epoch, seed, seeds, size=size, num_records=num_records, partitions=partitions,
                         shuffle=shuffle, placement=placement)
    index, epoch = advance_cursor(index, epoch, size=size, n=num_records)
    return index, epoch, batch


def host_batch(data: PyTree, index: int, epoch: int, seed: int, size: int, num_records: int, partitions: int,
               shuffle: bool, sharding: jax.sharding.Sharding | None) -> PyTree:
    """Returns the batch of a ``host`` state: record ids and the gather in NumPy, each device's rows put on it.

    Only the rows of this process's devices are gathered (``make_array_from_callback``).
    """
    per = size // partitions
    total = epoch * num_records + index
    part, rec = rows_to_records(np.arange(size, dtype=np.int64), total // partitions, per, num_records, partitions,
                                partition_seeds(seed, partitions), shuffle)
    idx = partition_offsets(num_records, partitions)[part] + rec

    def leaf(x):
        if sharding is None:
            return jax.device_put(np.take(x, idx, axis=0))
        return jax.make_array_from_callback((size, *x.shape[1:]), sharding, lambda i: np.take(x, idx[i[0]], axis=0))

    return jax.tree.map(leaf, data)


__all__ = [
    "advance_cursor", "host_batch", "partition_seeds", "placed_batch", "placed_step", "positions_to_records",
    "records_at", "rows_to_records", "take",
]
