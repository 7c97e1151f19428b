"""The batch gather: which record each batch row reads, and gathering it where the data is placed.

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
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from .._state import tracing
from .partitions import partition_offsets, partition_seed
from .placement import Placement, padded_length
from .._state.shuffle import permute

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


def _gather(data: PyTree, idx: jax.Array) -> PyTree:
    # Ids are in [0, rows held) by construction; "clip" costs a clamp, not the bounds-fill select.
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0, mode="clip"), data)


@functools.partial(
    tracing.jit_unless_traced,
    static_argnames=("size", "num_records", "partitions", "shuffle", "placement", "records_at"),
)
def placed_batch(data: PyTree, index: jax.Array, epoch: jax.Array, seed: jax.Array, seeds: jax.Array | None, *,
                 size: int, num_records: int, partitions: int, shuffle: bool, placement: Placement,
                 records_at: Callable) -> PyTree:
    """Returns the batch of ``size`` at the cursor, gathered where ``placement`` keeps the data.

    ``records_at(data, start, size, n, shuffle, seed, epoch)`` is the one-partition kernel
    (positions from the epoch start); it serves ``partitions == 1`` outside ``partitioned``.
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
    static_argnames=("size", "num_records", "partitions", "shuffle", "placement", "records_at", "advance"),
)
def placed_step(data: PyTree, index: jax.Array, epoch: jax.Array, seed: jax.Array, seeds: jax.Array | None, *,
                size: int, num_records: int, partitions: int, shuffle: bool, placement: Placement,
                records_at: Callable, advance: Callable) -> tuple[jax.Array, jax.Array, PyTree]:
    """Returns ``(index, epoch, batch)``: ``placed_batch`` and the cursor moved on by ``advance``, in one program."""
    batch = placed_batch(data, index, epoch, seed, seeds, size=size, num_records=num_records, partitions=partitions,
                         shuffle=shuffle, placement=placement, records_at=records_at)
    index, epoch = advance(index, epoch, size=size, n=num_records)
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


__all__ = ["host_batch", "partition_seeds", "placed_batch", "placed_step", "rows_to_records"]
