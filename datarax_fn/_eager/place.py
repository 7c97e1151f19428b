"""Placing an eager state: moving it to another placement, and the sharded mode across processes.

``dfn.place`` re-lays a state's data (``device``, ``replicated``, ``partitioned``, ``host``)
and keeps its cursor, so the stream goes on unchanged. ``dfn.from_local_partitions``
builds the *sharded mode* of a ``jax.distributed`` run: each process loads only the
records of its partitions (``dfn.local_records``) and the data becomes one global
``jax.Array`` split over every process's devices.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .._state import checks, tracing
from .arrays import check_no_none
from .source import EagerSource, check_data, placed_source
from .._layout.partitions import check_partitions, partition_offsets
from .._layout.placement import gather_to_host, local_partitions, make_placement, put, put_local
from .._layout.ragged_rows import compact_fields, padded

PyTree = Any


def place(state: EagerSource, placement: str, *, mesh: jax.sharding.Mesh | None = None) -> EagerSource:
    """Returns ``state`` with its data moved to ``placement``, at the same position of the same stream.

    The placement is not part of the stream or the cursor: batches, ``dfn.cursor`` and
    restores are the same before and after. The partitions stay those the state was
    built with (they define the order); ``"partitioned"`` over ``D`` devices needs them
    to be a multiple of ``D``. Call it outside ``jit``.

    Arguments:
        state: an ``EagerSource`` (from ``dfn.from_arrays``, ``dfn.from_hf``, ``dfn.from_tfds``).
        placement: ``"device"``, ``"replicated"``, ``"partitioned"`` or ``"host"`` (see ``dfn.from_arrays``).
        mesh: the mesh of the new placement; default: one axis ``"data"`` over every device.

    Returns:
        the re-placed ``EagerSource``.

    ```python
    import numpy as np, datarax_fn as dfn
    state = dfn.from_arrays({"x": np.arange(10, dtype=np.int32)}, shuffle=True, seed=0)
    state, first = dfn.get_batch(state, 4)
    on_host = dfn.place(state, "host")
    _, a = dfn.get_batch(state, 4)
    _, b = dfn.get_batch(on_host, 4)
    assert a["x"].tolist() == b["x"].tolist() and dfn.cursor(on_host) == dfn.cursor(state)
    ```
    """
    if not isinstance(state, EagerSource):
        raise TypeError(f"place: state must be an EagerSource (dfn.from_arrays, from_hf, from_tfds); got "
                        f"{type(state).__name__}.")
    if tracing.is_traced(state.index):
        raise TypeError("place: moves data between devices on the host; call it outside jit.")
    check_data(state, "place")
    where = make_placement(placement, mesh, state.partitions, "place")
    if where == state.placement:
        return state
    host = gather_to_host(padded(state.data), state.placement, state.num_records, state.partitions)
    if where.kind == "device" and state.partitions == 1:
        host = compact_fields(host)  # as from_arrays holds it: text flat, padded per batch
    return placed_source(
        put(host, where, state.num_records, state.partitions, copy=True), where,
        num_records=state.num_records, partitions=state.partitions, shuffle=state.shuffle, seed=int(state.seed),
        name=state.name, info=None if state.info is None else state.info.value, fingerprint=state.fingerprint,
        index=int(state.index), epoch=int(state.epoch),
    )


def from_local_partitions(
    local: PyTree,
    *,
    num_records: int,
    partitions: int,
    fingerprint: str,
    mesh: jax.sharding.Mesh | None = None,
    shuffle: bool = False,
    seed: int = 0,
    name: str = "arrays",
    info: Any = None,
) -> EagerSource:
    """Returns a ``partitioned`` ``EagerSource`` whose data is a global array built from each process's records.

    Every process of a ``jax.distributed`` run calls it with the records of its own
    partitions only, ``local`` = the file-order records ``dfn.local_records(num_records,
    partitions, mesh)``. The result is one state, the same in every process, whose
    batches (``dfn.get_batch`` inside ``jit``, or ``dfn.get_global_batch``) are
    identical for any number of processes and equal to those of
    ``dfn.from_arrays(all_records, partitions=partitions, placement="partitioned")``.

    Arguments:
        local: a PyTree of NumPy arrays: this process's records, in file order.
        num_records: ``N``, the records of the whole split (across all processes).
        partitions: ``C``, a multiple of the mesh's first axis size (the devices a batch spans).
        fingerprint: a string identifying the whole split, the same in every process
            (e.g. the loader's digest of files and options); the cursor checks it.
        mesh: the mesh of the batches; default: one axis ``"data"`` over every device of every process.
        shuffle: as in ``dfn.from_arrays``.
        seed: as in ``dfn.from_arrays``.
        name: as in ``dfn.from_arrays``.
        info: as in ``dfn.from_arrays``.

    Returns:
        an ``EagerSource`` at epoch 0, index 0, with ``placement="partitioned"``.

    ```python
    import numpy as np, datarax_fn as dfn
    n, c = 10, 2
    records = dfn.local_records(n, c)          # every record, in one process
    everything = np.arange(n, dtype=np.int32)
    state = dfn.from_local_partitions({"x": everything[records.start:records.stop]}, num_records=n,
                                      partitions=c, fingerprint="arange-10", shuffle=True, seed=4)
    alone = dfn.from_arrays({"x": everything}, partitions=c, shuffle=True, seed=4)
    assert dfn.get_batch(state, 4)[1]["x"].tolist() == dfn.get_batch(alone, 4)[1]["x"].tolist()
    ```
    """
    if not isinstance(fingerprint, str) or not fingerprint:
        raise TypeError(
            "from_local_partitions: fingerprint must be a non-empty str that is the same in every process (each "
            f"holds different records, so it cannot be computed from them); got {fingerprint!r}."
        )
    if isinstance(num_records, bool) or not isinstance(num_records, (int, np.integer)) or num_records < 1:
        raise ValueError(f"from_local_partitions: num_records must be an int >= 1; got {num_records!r}.")
    num_records = int(num_records)
    seed = checks.check_seed(seed, "from_local_partitions")
    shuffle = checks.check_flag(shuffle, "shuffle", "from_local_partitions")
    check_no_none(local, "from_local_partitions")
    partitions = check_partitions(partitions, num_records, "from_local_partitions")
    where = make_placement("partitioned", mesh, partitions, "from_local_partitions")
    parts = local_partitions(partitions, where.mesh, "from_local_partitions")
    off = partition_offsets(num_records, partitions)
    want = int(off[parts.stop] - off[parts.start])
    leaves = jax.tree_util.tree_flatten_with_path(local)[0]
    wrong = [f"{jax.tree_util.keystr(p)}: {np.shape(x)[:1]}" for p, x in leaves if np.shape(x)[:1] != (want,)]
    if not leaves or wrong:
        raise ValueError(
            f"from_local_partitions: this process holds partitions {parts.start}..{parts.stop - 1} of {partitions}, "
            f"the {want} records [{off[parts.start]}, {off[parts.stop]}); got leading sizes "
            f"{', '.join(wrong) or 'no leaves'}. Load exactly dfn.local_records(num_records, partitions, mesh)."
        )
    data = put_local(local, where, num_records, partitions, parts)
    return placed_source(data, where, num_records=num_records, partitions=partitions, shuffle=shuffle, seed=seed,
                         name=str(name), info=info, fingerprint=fingerprint)


__all__ = ["from_local_partitions", "place"]
