"""The layout of a mixture: which child serves each output position, as a pure function of it.

Windows of ``W = sum(quotas)`` positions; in each, child ``k`` owns ``quotas[k]`` slots, laid
out by the keyed bijection of ``_state.shuffle`` keyed by ``(seed, window)``. The same code
runs on NumPy (host) and JAX (inside ``jit``) and gives the same children.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._state import checks, tracing
from .._state.shuffle import permute


def quotas_of(weights: Any, window: int) -> tuple[int, ...]:
    """Returns each child's slots per window: ``window * w / sum(w)`` by largest remainder."""
    if isinstance(weights, (str, bytes, dict)) or not isinstance(weights, Sequence | np.ndarray):
        raise TypeError(f"mix: weights must be a sequence of numbers, one per source; got {type(weights).__name__}.")
    w = []
    for k, x in enumerate(weights):
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
            raise TypeError(f"mix: weights[{k}] must be a number; got {type(x).__name__} {x!r}.")
        if not (math.isfinite(float(x)) and float(x) > 0):
            raise ValueError(f"mix: weights[{k}] must be a finite number > 0; got {x!r}. Leave that source out instead.")
        w.append(float(x))
    raw = np.asarray(w) / sum(w) * window
    q = np.floor(raw).astype(np.int64)
    # Largest remainder; ties go to the earlier child, so the rounding is deterministic.
    order = sorted(range(len(w)), key=lambda k: (-(raw[k] - q[k]), k))
    for k in order[: window - int(q.sum())]:
        q[k] += 1
    empty = [k for k in range(len(w)) if q[k] == 0]
    if empty:
        k = empty[0]
        need = math.ceil(sum(w) / w[k])
        raise ValueError(
            f"mix: weights[{k}]={weights[k]!r} gives source {k} no slot in a window of {window} positions. "
            f"Pass window= at least {need}, or raise its weight."
        )
    return tuple(int(x) for x in q)


def epoch_length(quotas: tuple[int, ...], sizes: list[int | None], stop: str) -> int:
    """Returns the outputs of one mixture epoch: whole windows, as ``stop`` fixes them."""
    window = sum(quotas)
    known = [(k, n, q) for k, (n, q) in enumerate(zip(sizes, quotas)) if n is not None]
    if stop != "never" and len(known) < len(sizes):
        k = next(k for k, n in enumerate(sizes) if n is None)
        raise ValueError(
            f"mix: stop={stop!r} needs every source's length; source {k} does not know its length. "
            "Use stop='never', or load it with split metadata."
        )
    if stop == "first_exhausted":
        windows = min(n // q for _, n, q in known)
        if windows == 0:
            k, n, q = min(known, key=lambda t: t[1] // t[2])
            raise ValueError(
                f"mix: source {k} has {n} records, fewer than its {q} slots in one window of {window}, so "
                "stop='first_exhausted' would end before the first window. Pass a smaller window=, or "
                "stop='never' or 'all_exhausted'."
            )
    else:
        windows = max([-(-n // q) for _, n, q in known] or [1])
    if windows * window > checks.INT32_MAX:
        raise ValueError(f"mix: one epoch of the mixture would be {windows * window} > 2**31 - 1 records; "
                         "pass a smaller window=.")
    return windows * window


def _slots(quotas: tuple[int, ...]) -> np.ndarray:
    return np.repeat(np.arange(len(quotas), dtype=np.int32), quotas)


def select(index: Any, epoch: Any, seed: Any, size: int, quotas: tuple[int, ...], n: int) -> Any:
    """Returns the child of each output position ``index .. index + size - 1`` of epoch ``epoch``.

    NumPy on the host, JAX under ``jit`` (the same values): position ``i`` lies in window
    ``(epoch * n + i) // W`` at slot ``i % W`` (``n`` is a multiple of ``W``).
    """
    window = sum(quotas)
    per = n // window
    if tracing.is_traced(index, epoch, seed) or isinstance(index, jax.Array):
        pos = jnp.asarray(index).astype(jnp.uint32) + jnp.arange(size, dtype=jnp.uint32)
        ep = jnp.asarray(epoch).astype(jnp.uint32) + pos // jnp.uint32(n)
        local = pos % jnp.uint32(n)
        win = ep * jnp.uint32(per) + local // jnp.uint32(window)  # wraps mod 2**32, as the NumPy path
        slot = permute(local % jnp.uint32(window), window, jnp.asarray(seed).astype(jnp.uint32), win)
        return jnp.asarray(_slots(quotas))[slot]
    pos = int(index) + np.arange(size, dtype=np.int64)
    ep = int(epoch) + pos // n
    local = pos % n
    win = (ep * per + local // window) & 0xFFFFFFFF
    slot = permute(local % window, window, np.uint32(int(seed)), win.astype(np.uint32))
    return _slots(quotas)[slot]


def consumed(epoch: int, index: int, seed: int, quotas: tuple[int, ...], n: int) -> np.ndarray:
    """Returns ``c_k``: the records each child has served at output position ``(epoch, index)`` (O(W), on the host)."""
    window = sum(quotas)
    total = epoch * n + index
    whole, part = divmod(total, window)
    counts = whole * np.asarray(quotas, np.int64)
    if part:
        ep, ix = divmod(whole * window, n)  # the window's first position
        counts += np.bincount(select(ix, ep, seed, part, quotas, n), minlength=len(quotas))
    return counts
