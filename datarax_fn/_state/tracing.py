"""Per-step helpers for states: a fast ``replace``, and running kernels inline under a trace or jitted outside one."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def replace(state: Any, **changes: Any) -> Any:
    """Returns a copy of an ``eqx.Module`` state with ``changes``, skipping ``__init__``.

    ``dataclasses.replace`` re-runs ``__init__`` and its validation; this is on every
    state's per-step hot path, and a state built from a valid one stays valid.
    """
    unknown = set(changes) - set(_field_names(type(state)))
    if unknown:
        raise TypeError(f"replace: {type(state).__name__} has no fields {sorted(unknown)}.")
    new = object.__new__(type(state))
    # Copy the instance dict whole: a getattr per field goes through equinox's __getattribute__
    # (about 25 us per state on the per-step path), and a frozen dataclass keeps every field there.
    fields = object.__getattribute__(new, "__dict__")
    fields.update(object.__getattribute__(state, "__dict__"))
    fields.update(changes)
    return new


def is_traced(*trees: Any) -> bool:
    """Returns True when any leaf of ``trees`` is a tracer (we are inside jit/scan/vmap)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(trees))


def jit_unless_traced(fn: Callable | None = None, **jit_kwargs: Any) -> Callable:
    """Returns ``fn`` wrapped to run inline when traced, and as one cached ``jax.jit`` otherwise.

    Inside a user's ``jit`` the kernel must be traced into the caller's program; called
    eagerly it should compile once instead of dispatching op by op.
    """
    if fn is None:
        return functools.partial(jit_unless_traced, **jit_kwargs)
    jitted = jax.jit(fn, **jit_kwargs)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return (fn if is_traced(args, kwargs) else jitted)(*args, **kwargs)

    wrapper.jitted = jitted
    return wrapper
