"""Host values every process of a ``jax.distributed`` job learns from every other: one all-gather of JSON.

A stream read partition by partition moves each partition by what that partition's records
hold (how they pack, how many a filter keeps), which only the process reading it knows.
After such a step the processes send one another the positions of the partitions they read,
so every process holds the same state and any of them can save the cursor. JAX's own
collectives carry it (``multihost_utils.process_allgather``): no second runtime.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def gather_json(value: Any) -> list[Any]:
    """Returns the JSON-able ``value`` of every process, in process order (one process: ``[value]``).

    Two all-gathers: the sizes, then the payloads padded to a power of two (few shapes to compile).
    """
    if jax.process_count() == 1:
        return [value]
    mine = json.dumps(value).encode()
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([len(mine)], np.int32))).reshape(-1)
    width = 1 << max(int(sizes.max()) - 1, 255).bit_length()
    buffer = np.zeros(width, np.uint8)
    buffer[: len(mine)] = np.frombuffer(mine, np.uint8)
    every = np.asarray(multihost_utils.process_allgather(buffer)).reshape(len(sizes), width)
    return [json.loads(every[p, :size].tobytes()) for p, size in enumerate(sizes.tolist())]


__all__ = ["gather_json"]
