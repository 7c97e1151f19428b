"""Argument checks shared by every state's generic functions: sizes, seeds, start positions, epochs, flags, shardings.

One rule for all of them: a wrong type is a ``TypeError``, a wrong value a ``ValueError``,
each naming the function, the argument and the fix.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np

from .tracing import is_traced

INT32_MAX = 2**31 - 1


def short_repr(value: Any, limit: int = 80) -> str:
    """Returns ``repr(value)`` cut to about ``limit`` characters, so a hostile value never floods a message."""
    try:
        text = repr(value)
    except RecursionError:  # a deeply nested list or dict
        return f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_flag(value: Any, name: str, fn_name: str) -> bool:
    """Returns ``value`` as a bool if it is a Python or NumPy bool; TypeError otherwise (``"false"``, ``0``, ``None``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{fn_name}: {name} must be True or False; got {type(value).__name__} {name}={short_repr(value)}. "
            f"Pass {name}=True or {name}=False."
        )
    return bool(value)


def check_sharding(sharding: Any, fn_name: str) -> Any:
    """Returns ``sharding`` if it is a ``jax.sharding.Sharding``; TypeError naming the type and a fix otherwise."""
    if not isinstance(sharding, jax.sharding.Sharding):
        raise TypeError(
            f"{fn_name}: sharding must be a jax.sharding.Sharding, e.g. dfn.data_sharding() or "
            f"jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')); got "
            f"{type(sharding).__name__} {short_repr(sharding)}."
        )
    return sharding


def check_size(size: Any, fn_name: str = "get_batch") -> int:
    """Returns ``size`` as an int if it is a static integer in ``[1, 2**31 - 1]``, else raises."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(
            f"{fn_name}: size must be a static Python int (it fixes the batch shape); got "
            f"{type(size).__name__} {size!r}. Pass int(size); for a traced start position use "
            "dfn.get_batch_at(state, start, size)."
        )
    if not 1 <= size <= INT32_MAX:
        raise ValueError(f"{fn_name}: size must be in [1, 2**31 - 1]; got size={size}.")
    return int(size)


def check_seed(seed: Any, fn_name: str) -> int:
    """Returns ``seed`` as an int if it is an integer in ``[0, 2**32)``, else raises."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{fn_name}: seed must be an int in [0, 2**32); got {type(seed).__name__} {seed!r}.")
    if not 0 <= seed < 2**32:
        raise ValueError(f"{fn_name}: seed must be in [0, 2**32); got seed={seed}. Use seed % 2**32.")
    return int(seed)


def check_start(start: Any, fn_name: str = "get_batch_at") -> Any:
    """Returns ``start`` checked to be ``>= 0``: a ValueError when concrete, ``eqx.error_if`` when traced."""
    if is_traced(start):
        return eqx.error_if(
            start, start < 0, f"{fn_name}: start must be >= 0 (positions count from the epoch's first record)."
        )
    if isinstance(start, bool) or not np.issubdtype(np.asarray(start).dtype, np.integer) or np.ndim(start):
        raise TypeError(f"{fn_name}: start must be an integer scalar; got {type(start).__name__} {start!r}.")
    if not 0 <= int(start) <= INT32_MAX:
        raise ValueError(
            f"{fn_name}: start must be in [0, 2**31 - 1] (positions count from the first record of "
            f"epoch state.epoch; they do not wrap); got start={int(start)}."
        )
    return start


def check_epochs(epochs: Any, fn_name: str = "iterate") -> int:
    """Returns ``epochs`` as an int if it is an integer ``>= 1``, else raises."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)):
        raise TypeError(f"{fn_name}: epochs must be a Python int >= 1; got {type(epochs).__name__} {epochs!r}.")
    if epochs < 1:
        raise ValueError(f"{fn_name}: epochs must be >= 1; got epochs={epochs}.")
    return int(epochs)
