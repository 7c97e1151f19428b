"""Where an eager dataset lives: one device, every device, its partitions per device, or the host.

A placement is a small static value on the state, like grain's ``ShardOptions``; it
never changes the stream (that is ``partitions``' job) and is not part of the cursor, so
a state re-placed with ``dfn.place`` continues exactly where it was.

==============  =======================================  ==========================
placement       memory                                    rows of a batch
==============  =======================================  ==========================
``device``      the dataset once, on the default device   gathered on that device
``replicated``  the dataset on every device (x devices)   each device its own rows
``partitioned`` each device its partitions only (1 / D)   each device from its own data
``host``        the dataset once, in host (NumPy) memory  gathered by NumPy, put per device
==============  =======================================  ==========================

``partitioned`` stores partition ``c`` in rows ``[c * L, c * L + len_c)`` of a leading
axis of ``C * L`` (``L = ceil(N / C)``; the short partitions end in one unused row), split
over the mesh's first axis so that each device holds ``C / D`` whole partitions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from .._state import tracing
from .partitions import check_partitions, partition_offsets, process_rows

PyTree = Any
PLACEMENTS = ("device", "replicated", "partitioned", "host")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a state's data lives: ``kind`` (one of ``PLACEMENTS``) and, but for ``device``, a mesh.

    Batches of a placement with a mesh come out split over the mesh's first axis.
    """

    kind: str = "device"
    mesh: jax.sharding.Mesh | None = None

    @property
    def axis(self) -> str:
        return self.mesh.axis_names[0]

    @property
    def devices(self) -> int:
        """The number of devices a batch is split over (1 for ``device``)."""
        return 1 if self.mesh is None else self.mesh.shape[self.axis]

    def describe_devices(self) -> str:
        """Returns the devices a batch is split over, in words (for error messages)."""
        if self.mesh is None:
            return "the one device of placement='device'"
        return f"the {self.devices} devices of mesh axis {self.axis!r} (placement={self.kind!r})"

    def batch_sharding(self) -> NamedSharding | None:
        """Returns the layout of a batch's leading axis, or None for ``device``."""
        return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec(self.axis))

    def replicated(self) -> jax.sharding.Sharding:
        """Returns where a value every device needs lives: the default device, or all of the mesh."""
        if self.mesh is None:
            return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return NamedSharding(self.mesh, PartitionSpec())


def make_placement(placement: Any, mesh: Any, partitions: int, where: str) -> Placement:
    """Returns the checked ``Placement`` for a placement name and an optional mesh."""
    if not isinstance(placement, str):
        raise TypeError(f"{where}: placement must be a str, one of {PLACEMENTS}; got {type(placement).__name__}.")
    if placement not in PLACEMENTS:
        raise ValueError(f"{where}: placement must be one of {PLACEMENTS}; got placement={placement!r}.")
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(
            f"{where}: mesh must be a jax.sharding.Mesh (e.g. jax.make_mesh((jax.device_count(),), ('data',))) "
            f"or None; got {type(mesh).__name__}."
        )
    if placement == "device":
        if mesh is not None:
            raise ValueError(
                f"{where}: placement='device' keeps the data on one device and takes no mesh; use "
                "placement='replicated' or 'partitioned' to spread it over the mesh's devices."
            )
        return Placement()
    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), ("data",))
    out = Placement(placement, mesh)
    if placement == "partitioned" and partitions % out.devices:
        d = out.devices
        raise ValueError(
            f"{where}: placement='partitioned' puts whole partitions on each of the {d} devices of mesh axis "
            f"{out.axis!r}, so partitions must be a multiple of {d}; got partitions={partitions}. "
            f"Use partitions={max(d, partitions // d * d)}."
        )
    return out


def check_single_device() -> None:
    """Raises when a one-device state's ``get_batch`` is traced under a multi-device ``jax.set_mesh``."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        raise ValueError(
            f"get_batch: the state's data is on one device (placement='device'), but this jit runs over a mesh of "
            f"{mesh.size} devices, where JAX would copy the whole dataset onto every one of them. Before the jit, choose the "
            "placement: dfn.place(state, 'replicated') (every device holds all data), or build it with "
            "dfn.from_arrays(..., partitions=<a multiple of the devices>, placement='partitioned')."
        )


def check_on_boundary(start: Any, partitions: int) -> Any:
    """Returns ``start`` checked to be a multiple of ``partitions`` (``eqx.error_if`` when traced)."""
    if partitions == 1:
        return start
    message = f"get_batch_at: start must be a multiple of partitions={partitions} (a batch boundary)"
    if tracing.is_traced(start):
        return eqx.error_if(start, start % partitions != 0, message + ".")
    if int(start) % partitions:
        raise ValueError(f"{message}; got start={int(start)}.")
    return start


def padded_length(num_records: int, partitions: int) -> int:
    """Returns ``L = ceil(N / C)``, the rows each partition takes in the ``partitioned`` layout."""
    return -(-num_records // partitions)


def stored_records(num_records: int, partitions: int, placement: Placement) -> int:
    """Returns the leading size of the data arrays a state of this placement holds."""
    if placement.kind == "partitioned":
        return partitions * padded_length(num_records, partitions)
    return num_records


def pad_partitions(x: np.ndarray, num_records: int, partitions: int, parts: range) -> np.ndarray:
    """Returns the file-order records of partitions ``parts`` (``x``) with each one padded to ``L`` rows."""
    off = partition_offsets(num_records, partitions)
    length = padded_length(num_records, partitions)
    out = np.zeros((len(parts) * length, *x.shape[1:]), x.dtype)
    base = off[parts.start]
    for i, c in enumerate(parts):
        out[i * length:i * length + off[c + 1] - off[c]] = x[off[c] - base:off[c + 1] - base]
    return out


def unpad_partitions(x: np.ndarray, num_records: int, partitions: int) -> np.ndarray:
    """Returns the ``N`` file-order records of a ``partitioned`` layout (the inverse of ``pad_partitions``)."""
    off = partition_offsets(num_records, partitions)
    length = padded_length(num_records, partitions)
    return np.concatenate([x[c * length:c * length + off[c + 1] - off[c]] for c in range(partitions)])


def local_partitions(partitions: int, mesh: jax.sharding.Mesh, where: str) -> range:
    """Returns the partitions whose rows this process's devices hold in the ``partitioned`` layout."""
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    return range(*process_rows(sharding, partitions, where, "partitions"))


def local_records(num_records: int, partitions: int, mesh: jax.sharding.Mesh | None = None) -> range:
    """Returns the file-order records this process loads for a ``partitioned`` state over ``mesh``.

    In a ``jax.distributed`` run each process holds only the partitions its devices own:
    with ``P`` processes, process ``p`` holds partitions ``range(p * C // P, (p + 1) * C // P)``.
    Load these records (e.g. ``Dataset.select(range)``, a TFDS split slice ``train[a:b]``) and
    pass them to ``dfn.from_local_partitions``.

    Arguments:
        num_records: ``N``, the records of the whole split.
        partitions: ``C``, a multiple of the mesh's first axis size.
        mesh: the mesh the batches are split over; default: one axis over every device.

    Returns:
        a ``range`` of file-order record ids, contiguous.

    ```python
    import datarax_fn as dfn
    assert dfn.local_records(10, 2) == range(0, 10)   # one process holds every partition
    ```
    """
    partitions = check_partitions(partitions, num_records, "local_records")
    placement = make_placement("partitioned", mesh, partitions, "local_records")
    parts = local_partitions(partitions, placement.mesh, "local_records")
    off = partition_offsets(num_records, partitions)
    return range(int(off[parts.start]), int(off[parts.stop]))


def put(data: PyTree, placement: Placement, num_records: int, partitions: int, copy: bool) -> PyTree:
    """Returns host or device ``data`` (all ``N`` file-order records) laid out as ``placement`` stores it."""
    if placement.kind == "host":
        return jax.tree.map(np.asarray, data)
    if placement.kind == "device":
        return jax.tree.map(lambda x: to_device(x, copy), data)
    if placement.kind == "replicated":
        return jax.tree.map(lambda x: _shards(np.asarray(x), placement.replicated(), x.shape, 0, copy), data)
    return put_local(data, placement, num_records, partitions, range(partitions), copy)


def to_device(x: Any, copy: bool) -> jax.Array:
    """Returns ``x`` committed to the default device (see ``from_arrays(copy=...)``).

    Committed: a jit whose other arguments span several devices then refuses the state
    instead of silently copying the whole dataset onto each of them.
    """
    device = jax.local_devices()[0]
    if isinstance(x, jax.Array):
        return x if x.committed else jax.device_put(x, device)  # no copy: same buffer, now committed
    # jnp.asarray copies into XLA-owned memory, which a donating jit can alias in to out.
    # device_put may instead alias 64-byte-aligned NumPy memory on CPU: no copy now, but
    # XLA cannot donate a buffer it does not own, so the first donated step copies it once.
    return jax.device_put(jnp.asarray(x) if copy else x, device)


def put_local(local: PyTree, placement: Placement, num_records: int, partitions: int, parts: range,
              copy: bool = True) -> PyTree:
    """Returns the global ``partitioned`` arrays from this process's partitions ``parts`` (file order)."""
    length = padded_length(num_records, partitions)
    sharding = placement.batch_sharding()

    def leaf(x):
        padded = pad_partitions(np.asarray(x), num_records, partitions, parts)
        # The padded copy is ours, so the device shards may alias it even when copy=True asks for XLA memory.
        return _shards(padded, sharding, (partitions * length, *x.shape[1:]), parts.start * length, copy)

    return jax.tree.map(leaf, local)


def _shards(local: np.ndarray, sharding: NamedSharding, shape: tuple, first_row: int, copy: bool) -> jax.Array:
    """Returns the global array whose addressable shards come from ``local`` (rows from ``first_row`` on).

    ``device_put`` may alias 64-byte-aligned NumPy memory on CPU; with ``copy`` such
    shards are copied once into XLA-owned memory (which a donating jit can alias in to
    out, and which later writes to ``local`` cannot reach).
    """
    shards, aliased = [], False
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        rows = index[0] if index else slice(None)
        block = local[(rows.start or 0) - first_row:(shape[0] if rows.stop is None else rows.stop) - first_row]
        shard = jax.device_put(block, device)
        aliased |= block.size > 0 and shard.unsafe_buffer_pointer() == block.ctypes.data
        shards.append(shard)
    out = jax.make_array_from_single_device_arrays(shape, sharding, shards)
    return _fresh_copy(out) if copy and aliased else out


# A jit's outputs are fresh XLA buffers with the input's sharding (on the mesh, so it also
# runs inside jax.set_mesh, where single-device copies are refused).
_fresh_copy = jax.jit(lambda x: x)


def gather_to_host(data: PyTree, placement: Placement, num_records: int, partitions: int) -> PyTree:
    """Returns the ``N`` file-order records of a placed dataset as NumPy arrays (one process only)."""
    def leaf(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            raise ValueError(
                "this state's data spans several processes (from_local_partitions); each process holds only "
                "its partitions, so the whole dataset cannot be gathered here. Load it whole with "
                "dfn.from_arrays(..., placement=...) instead."
            )
        x = np.asarray(x)
        return unpad_partitions(x, num_records, partitions) if placement.kind == "partitioned" else x

    return jax.tree.map(leaf, data)


__all__ = ["PLACEMENTS", "Placement", "local_records", "make_placement"]
