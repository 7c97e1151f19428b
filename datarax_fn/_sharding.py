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

from . import _core
from ._eager import EagerSource, advance


@_core.get_global_batch.register
def _(state: EagerSource, global_size: int, sharding: jax.sharding.Sharding) -> tuple[EagerSource, Any]:
    # Global mode: every process holds the whole dataset and gathers only its own rows.
    _core.check_size(global_size, "get_global_batch")
    if _core.is_traced(state.index):
        raise TypeError(
            "get_global_batch runs on the host; inside jit use dfn.get_batch and "
            "jax.lax.with_sharding_constraint(batch, sharding)."
        )
    start, stop = _core.process_rows(sharding, global_size)
    local = _core.get_batch_at(state, state.index + start, stop - start)
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

