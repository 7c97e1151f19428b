"""Chunk work that may run on worker threads: the cores a process may use, deferred chunks, the pool.

A backend's reading is sequential (a parquet file, a tfrecord stream), but turning the raw
columns it reads into a batch (taking the shuffled rows, decoding images, the user's
transform, the conversion rules) is independent per chunk. A backend yields that work as a
:class:`Deferred` chunk; the reader submits it to a pool of ``num_workers`` threads in read
order and serves the results in the same order, so the records do not depend on the
number of workers. Threads suffice where the work releases the GIL: pyarrow, PIL, OpenCV
and zlib do; a transform written in pure Python is serialised by the GIL.

The pool lives inside the reader's producer: it is shut down, its running chunks finished,
before the producer thread ends, so no worker outlives the reader (see ``prefetch`` for
why that keeps the interpreter's exit safe).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
from collections.abc import Callable, Iterator
from typing import Any


def available_cores() -> int:
    """Returns the cores this process may use: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_quota() -> int | None:
    # A container's CPU limit is a quota, not an affinity: a pod limited to 2 CPUs on a
    # 64-core node sees 64 in sched_getaffinity. cgroup v2 writes it to cpu.max; v1 splits
    # it over two files.
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            return quota_from_cpu_max(f.read())
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota_us = f.read().strip()
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period_us = f.read().strip()
        return quota_from_cpu_max(f"{'max' if int(quota_us) < 0 else quota_us} {period_us}")
    except (OSError, ValueError):
        return None


def quota_from_cpu_max(text: str) -> int | None:
    """Returns the whole cores a cgroup v2 ``cpu.max`` (``"quota period"`` or ``"max period"``) allows; None: no limit."""
    quota, period = text.split()[:2]
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


class Deferred:
    """A chunk of ``rows`` records whose work is still to do: ``work()`` returns the chunk.

    ``where`` describes the chunk for an error raised by ``work`` (the file rows it holds).
    ``work`` must depend on nothing but what it closes over: it may run on any thread.
    """

    __slots__ = ("rows", "work", "where")

    def __init__(self, rows: int, work: Callable[[], Any], where: str = ""):
        self.rows, self.work, self.where = int(rows), work, where

    def run(self) -> Any:
        """Returns the chunk; an error gets a note naming the chunk."""
        try:
            return self.work()
        except Exception as err:
            if self.where:
                err.add_note(f"While preparing the chunk of {self.where}.")
            raise


def prepared(items: Iterator[tuple], workers: int) -> Iterator[tuple]:
    """Yields ``items`` (``(partition, kind, value, ...)``), in order, each ``Deferred`` value replaced by a ``Future`` of its chunk.

    One worker prepares the chunk here, on the calling thread; several share a thread pool.
    Either way an error is kept in the future, so it surfaces where the chunk is taken.
    """
    pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="datarax_fn-worker") if workers > 1 else None
    try:
        for c, kind, value, *more in items:  # more: what the reader notes beside a chunk, passed on
            if isinstance(value, Deferred):
                value = _done(value) if pool is None else pool.submit(value.run)
            yield c, kind, value, *more
    except GeneratorExit:  # closed: chunks not started yet are dropped
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        # The running chunks finish before the producer ends, so no worker outlives it.
        if pool is not None:
            pool.shutdown(wait=True)
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _done(chunk: Deferred) -> cf.Future:
    fut: cf.Future = cf.Future()
    try:
        fut.set_result(chunk.run())
    except Exception as err:  # kept for whoever takes this chunk's records
        fut.set_exception(err)
    return fut


def check_workers(num_workers: Any, name: str) -> int:
    """Returns ``num_workers`` as an int >= 1 (None: :func:`available_cores`)."""
    if num_workers is None:
        return available_cores()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) and not hasattr(num_workers, "__index__"):
        raise TypeError(f"{name}: num_workers must be None or an int >= 1 (threads preparing chunks); "
                        f"got num_workers={num_workers!r}.")
    if int(num_workers) < 1:
        raise ValueError(f"{name}: num_workers must be >= 1 (1 prepares chunks on the reader thread, None uses "
                         f"every core this process may use); got num_workers={num_workers!r}.")
    return int(num_workers)


__all__ = ["Deferred", "available_cores", "check_workers", "prepared", "quota_from_cpu_max"]
