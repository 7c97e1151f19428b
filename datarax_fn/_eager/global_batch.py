"""Laying a batch out across devices and hosts with JAX's own runtime.

There is no datarax_fn scheduler: every process (one per host, as ``jax.distributed``
runs them) holds the same source state and reads only the stream positions of the
rows its devices own, then ``jax.make_array_from_process_local_data`` stitches the
global ``jax.Array``. All processes advance by the whole global batch, so their states
stay identical and any one of them can be checkpointed.
"""

from __future__ import annotations

from typing import Any

import jax

from .._layout.partitions import process_rows
from .._state import checks, contract, tracing
from .source import EagerSource, advance, check_data
from .._layout.gather import host_batch
from .._layout.partitions import check_batch_size


@contract.get_global_batch.register
def _(state: EagerSource, global_size: int, sharding: jax.sharding.Sharding) -> tuple[EagerSource, Any]:
    checks.check_size(global_size, "get_global_batch")
    checks.check_sharding(sharding, "get_global_batch")
    check_data(state, "get_global_batch")
    if tracing.is_traced(state.index):
        raise TypeError(
            "get_global_batch runs on the host; inside jit use dfn.get_batch on a state placed over the mesh "
            "(dfn.from_arrays(..., placement='partitioned' or 'replicated')): its batch comes out split over "
            "the mesh's first axis."
        )
    kind = state.placement.kind
    if kind in ("replicated", "partitioned"):
        # Each device gathers its own rows from the data it holds; only a sharding other than
        # the state's own batch layout moves rows afterwards.
        new, batch = contract.get_batch(state, global_size)
        if jax.tree.leaves(batch)[0].sharding != sharding:
            batch = jax.device_put(batch, sharding)
        return new, batch
    check_batch_size(global_size, state.partitions, "get_global_batch")
    if kind == "host":
        batch = host_batch(state.data, int(state.index), int(state.epoch), int(state.seed), size=global_size,
                           num_records=state.num_records, partitions=state.partitions, shuffle=state.shuffle,
                           sharding=sharding)
        return advance(state, global_size), batch
    # Global mode: every process holds the whole dataset on one device, so its rows are gathered
    # there and then split over its devices; the other placements gather on each device instead.
    start, stop = process_rows(sharding, global_size)
    if state.partitions == 1:
        local = contract.get_batch_at(state, state.index + start, stop - start)
    else:
        local = jax.tree.map(lambda x: x[start:stop], contract.get_batch(state, global_size)[1])
    batch = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x, (global_size, *x.shape[1:])), local
    )
    return advance(state, global_size), batch


def data_sharding(axis_name: str = "data") -> jax.sharding.NamedSharding:
    """Returns a ``NamedSharding`` that splits a batch's leading axis over every device.

    The mesh is ``jax.make_mesh((jax.device_count(),), (axis_name,))``, in which each
    process's devices hold one contiguous block of rows.

    Arguments:
        axis_name: the name of the mesh axis.

    Returns:
        ``NamedSharding(mesh, PartitionSpec(axis_name))``.
    """
    mesh = jax.make_mesh((jax.device_count(),), (axis_name,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis_name))

