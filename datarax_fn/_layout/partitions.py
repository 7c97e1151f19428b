"""Canonical partitions: one global stream that any number of processes can read together.

A stream over ``N`` records may be split into ``C`` *partitions*, a number fixed by the
user and independent of how many processes read it. Partition ``c`` holds the
file-order records ``[offsets[c], offsets[c + 1])`` with ``offsets[c] = c * N // C``, so
lengths differ by at most one and each partition is one contiguous range a process can
seek to. The global stream is defined over partitions alone:

* **Order.** Partition ``c`` walks its own epochs back to back, in an order keyed by
  ``(partition_seed(seed, c, C), its epoch)``. With ``C == 1`` the partition seed is
  the seed itself, so one partition is exactly the unpartitioned stream.
* **Batches.** A global batch of ``B`` records (``B`` a multiple of ``C``) takes the next
  ``B // C`` records of every partition and lays them out partition-major: rows
  ``[c * B // C, (c + 1) * B // C)`` come from partition ``c``.
* **Cursor.** The state keeps the usual ``(epoch, index)`` with ``total = epoch * N +
  index`` records consumed, always a multiple of ``C``; every partition has consumed
  ``q = total // C`` of its records, so it is at its epoch ``q // len_c``, position
  ``q % len_c``. Nothing in the cursor depends on the number of processes, which is what
  makes restoring under another process count exact.

A process that owns the rows ``[start, stop)`` of each global batch (``start`` and ``stop``
multiples of ``B // C``) reads only partitions ``start * C // B .. stop * C // B - 1``: every
record is read by exactly one process per epoch. When ``N`` is not a multiple of ``C``
the shorter partitions start their next epoch one record earlier than the longer ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._state import checks
from .._state.shuffle import epoch_seed

# Keeps partition seeds apart from the per-window seeds that epoch_seed(seed, window) gives.
_PARTITION_SALT = 0x5BD1E995


def check_partitions(partitions: Any, num_records: int | None, where: str) -> int:
    """Returns ``partitions`` as an int in ``[1, num_records]``; TypeError / ValueError otherwise."""
    if isinstance(partitions, bool) or not isinstance(partitions, (int, np.integer)):
        raise TypeError(f"{where}: partitions must be an int >= 1; got {type(partitions).__name__} {partitions!r}.")
    partitions = int(partitions)
    if partitions < 1:
        raise ValueError(f"{where}: partitions must be an int >= 1; got partitions={partitions}.")
    if partitions > 1 and num_records is None:
        raise ValueError(
            f"{where}: partitions={partitions} needs the number of records, which this stream does not know; "
            "use partitions=1, or a split whose size the dataset declares."
        )
    if num_records is not None and partitions > num_records:
        raise ValueError(
            f"{where}: partitions={partitions} is more than the {num_records} records; use partitions <= {num_records}."
        )
    return partitions


def partition_offsets(num_records: int, partitions: int) -> np.ndarray:
    """Returns the ``partitions + 1`` file-order boundaries: partition ``c`` is ``[off[c], off[c + 1])``."""
    c = np.arange(partitions + 1, dtype=np.int64)
    return c * num_records // partitions


def partition_seed(seed: int, partition: int, partitions: int) -> int:
    """Returns the uint32 seed of one partition's order; ``seed`` itself when there is one partition."""
    if partitions == 1:
        return int(seed)
    return epoch_seed((int(seed) ^ _PARTITION_SALT) % 2**32, int(partition))


def check_batch_size(size: int, parts: int, where: str, over: str | None = None) -> int:
    """Returns ``size // parts``, the rows each part takes of a batch of ``size``; ValueError unless ``parts`` divides it.

    A batch is split evenly over the stream's partitions and over the devices of a mesh;
    ``over`` names the parts in the message (default ``partitions=<parts>``).
    """
    if size % parts:
        lo = max(parts, size // parts * parts)
        over = over or f"partitions={parts}"
        raise ValueError(
            f"{where}: size={size} is not a multiple of {over}; every batch takes the same number of rows "
            f"from each of them. Use size={lo} or {lo + parts}."
        )
    return size // parts


def partition_position(total: int, partitions: int, length: int) -> tuple[int, int]:
    """Returns ``(epoch, position)`` of a partition of ``length`` records after ``total`` global records."""
    return divmod(total // partitions, length)


def owned_partitions(start: int, stop: int, size: int, partitions: int, where: str) -> range:
    """Returns the partitions whose rows are ``[start, stop)`` of a batch of ``size`` (partition-major)."""
    per = check_batch_size(size, partitions, where)
    if start % per or stop % per:
        raise ValueError(
            f"{where}: this process owns rows [{start}, {stop}) of a batch of {size}, which do not fall on "
            f"partition boundaries (every {per} rows with partitions={partitions}). Use a number of partitions "
            "that is a multiple of the number of processes (or devices) sharing the batch."
        )
    return range(start // per, stop // per)


def process_rows(sharding: Any, size: int, where: str = "get_global_batch", what: str = "batch rows") -> tuple[int, int]:
    """Returns the contiguous ``[start, stop)`` of an axis of ``size`` that this process's devices own.

    The rows of a batch (``sharding`` its layout), or the partitions of a ``partitioned``
    state (a sharding over ``C`` partitions); ``what`` names them in the error.
    """
    checks.check_sharding(sharding, where)
    rows: set[int] = set()
    for index in sharding.addressable_devices_indices_map((size,)).values():
        rows.update(range(size)[index[0]] if index else range(size))
    start, stop = min(rows), max(rows) + 1
    if len(rows) != stop - start:
        raise ValueError(
            f"{where}: this process owns the {what} {sorted(rows)}, which are not contiguous. Order the mesh so "
            "each process's devices hold one contiguous block, e.g. jax.make_mesh((jax.device_count(),), ('data',))."
        )
    return start, stop


__all__ = [
    "check_batch_size", "check_partitions", "owned_partitions", "partition_offsets", "partition_position",
    "partition_seed", "process_rows",
]
