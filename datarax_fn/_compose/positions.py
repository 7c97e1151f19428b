"""A source's place in its stream as one number, and the same source moved on without reading."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .._state import checks, contract, tracing


def put_scalar(like: Any, value: int) -> Any:
    """Returns ``value`` as an int32 cursor leaf where ``like`` lives: an eager state's device, a stream's host."""
    arr = np.asarray(value, np.int32)
    return jax.device_put(arr, like.sharding) if isinstance(like, jax.Array) else arr


def position(state: Any) -> int:
    """Returns the records a state of known length has consumed since epoch 0: ``epoch * N + index``."""
    return int(state.epoch) * contract.num_records(state) + int(state.index)


def moved(state: Any, records: int) -> Any:
    """Returns an eager or streaming ``state`` moved on by ``records`` without reading them."""
    epoch, index = divmod(position(state) + records, contract.num_records(state))
    if epoch > checks.INT32_MAX:
        raise ValueError("the source's epoch counter passed 2**31 - 1; start from a fresh state with a new seed.")
    return tracing.replace(state, index=put_scalar(state.index, index), epoch=put_scalar(state.epoch, epoch))
