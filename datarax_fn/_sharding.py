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


def _process_rows(sharding: jax.sharding.Sharding, global_size: int) -> tuple[int, int]:
    """Returns the contiguous ``[start, stop)`` rows of the batch this process's devices own."""
    rows = set()
    for index in sharding.addressable_devices_indices_map((global_size,)).values():
        rows.update(range(global_size)[index[0]] if index else range(global_size))
    start, stop = min(rows), max(rows) + 1
    if len(rows) != stop - start:
        raise ValueError(
            f"get_global_batch: this process owns rows {sorted(rows)} of the batch, which are not "
            "contiguous. Order the mesh so each process's devices hold one contiguous block, e.g. "
            "jax.make_mesh((jax.device_count(),), ('data',))."
        )
    return start, stop


def get_global_batch(state: EagerSource, global_size: int, sharding: jax.sharding.Sharding) -> tuple[EagerSource, Any]:
    """Returns ``(new_state, batch)``: the next ``global_size`` records as global arrays.

    ``batch`` leaves are ``jax.Array``s laid out by ``sharding`` (sharding the leading
    axis, e.g. ``NamedSharding(mesh, P("data"))``). With several processes, each one
    reads only the rows its devices own; the result is identical to the single-process
    ``get_batch(state, global_size)``. Call it on the host, outside ``jit``; inside a
    jitted step on one host, use ``get_batch`` and ``jax.lax.with_sharding_constraint``.

    Arguments:
        state: an ``EagerSource`` (the same state in every process).
        global_size: records in the global batch, a multiple of the devices sharing it.
        sharding: how the batch's leading axis is laid out, e.g. ``dfn.data_sharding()``.

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
    _core.check_size(global_size, "get_global_batch")
    if not isinstance(state, EagerSource):
        raise TypeError(f"get_global_batch: expected an EagerSource; got {type(state).__name__}.")
    if _core.is_traced(state.index):
        raise TypeError(
            "get_global_batch runs on the host; inside jit use dfn.get_batch and "
            "jax.lax.with_sharding_constraint(batch, sharding)."
        )
    start, stop = _process_rows(sharding, global_size)
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

